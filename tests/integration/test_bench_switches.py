"""The benchmarks' security-off switches exist only on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.bootstrap import build
from gateway.canonical.errors import ConfigError
from gateway.config import Settings
from tests.harness import default_counterparts


def _settings(tmp: Path, **values: Any) -> Settings:
    return Settings(database_url=f"sqlite+aiosqlite:///{tmp / 'g.db'}", counterparts_file=default_counterparts(tmp),
                    **values)


@pytest.mark.parametrize("switch", ["insecure_no_auth", "insecure_no_exchange_log"])
def test_switch_refused_off_loopback(tmp_path: Path, switch: str) -> None:
    with pytest.raises(ConfigError, match="loopback only"):
        build(_settings(tmp_path, host="0.0.0.0", **{switch: True}))


def test_exchange_log_switch_leaves_the_store_without_a_log(tmp_path: Path) -> None:
    assert build(_settings(tmp_path, insecure_no_exchange_log=True)).store.exchange_log is None
    assert build(_settings(tmp_path)).store.exchange_log is not None
