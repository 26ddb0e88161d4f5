"""Mapping files are checked whole at start-up; a bad one stops the gateway naming the file and the field."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
import yaml

from gateway.canonical.errors import ConfigError
from gateway.canonical.messages import ReferralKind
from gateway.config import ROOT
from gateway.mapping import load_mappings
from tests.harness import free_port

MAPPINGS = ROOT / "gateway" / "mappings"

GOOD_INSTANCE = {"name": "probation", "counterpart": "probation", "base_url": "http://127.0.0.1:8100"}


@pytest.fixture
def mappings_dir(tmp_path: Path) -> Path:
    d = tmp_path / "mappings"
    d.mkdir()
    shutil.copy(MAPPINGS / "referral-kinds.yaml", d / "referral-kinds.yaml")
    return d


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _counterparts(path: Path, *instances: dict) -> Path:
    listed = [{**i, "keys": i.get("keys", [f"{i['name']}.crt.pem"])} for i in instances]
    return _write(path, yaml.safe_dump({"version": 1, "instances": listed}, allow_unicode=True))


def _config_error(mappings_dir: Path, counterparts: Path | None) -> str:
    with pytest.raises(ConfigError) as info:
        load_mappings(mappings_dir, counterparts_file=counterparts)
    return str(info.value)


def test_the_repository_mappings_load() -> None:
    m = load_mappings(MAPPINGS)
    assert set(m.kinds.kinds) == set(get_args(ReferralKind))  # every referral kind has a counterpart
    names = [i.name for i in m.counterparts.instances]
    assert len(names) == len(set(names))
    assert m.instance("probation") is not None and m.instance("probation").counterpart == "probation"
    assert m.kinds.kinds["shelter.placement"].counterpart == "mio"
    mio_regions = {r for i in m.counterparts.instances if i.counterpart == "mio" for r in i.regions}
    assert {"KZ-35", "KZ-71", "KZ-75"} <= mio_regions


def test_an_unknown_field_is_named(mappings_dir: Path) -> None:
    bad = _counterparts(mappings_dir / "counterparts.yaml", GOOD_INSTANCE, {
        "name": "mio-kz-35", "counterpart": "mio", "base_url": "http://127.0.0.1:8101", "colour": "red"})
    message = _config_error(mappings_dir, bad)
    assert f"{bad}: instances.1.colour:" in message
    assert "Extra inputs are not permitted" in message


def test_a_duplicate_instance_name_is_named(mappings_dir: Path) -> None:
    bad = _counterparts(mappings_dir / "counterparts.yaml", GOOD_INSTANCE,
                        {"name": "mio-kz-35", "counterpart": "mio", "base_url": "http://127.0.0.1:8101"},
                        {"name": "mio-kz-35", "counterpart": "mio", "regions": ["KZ-71"],
                         "base_url": "http://127.0.0.1:8102"})
    message = _config_error(mappings_dir, bad)
    assert str(bad) in message
    assert "instances.2.name" in message and "duplicate instance name 'mio-kz-35'" in message


def test_two_instances_serving_one_region_are_named(mappings_dir: Path) -> None:
    bad = _counterparts(mappings_dir / "counterparts.yaml", GOOD_INSTANCE,
                        {"name": "mio-a", "counterpart": "mio", "regions": ["KZ-35"], "base_url": "http://a"},
                        {"name": "mio-b", "counterpart": "mio", "regions": ["KZ-71", "KZ-35"], "base_url": "http://b"})
    message = _config_error(mappings_dir, bad)
    assert str(bad) in message and "instances.2.regions" in message and "'KZ-35'" in message


def test_a_bad_value_is_named(mappings_dir: Path) -> None:
    bad = _counterparts(mappings_dir / "counterparts.yaml",
                        dict(GOOD_INSTANCE, timeout_s=-1, retry={"max_attempts": 0}))
    message = _config_error(mappings_dir, bad)
    assert f"{bad}: instances.0.timeout_s:" in message
    assert f"{bad}: instances.0.retry.max_attempts:" in message  # every error, not just the first


def test_bad_yaml_names_the_file_and_where(mappings_dir: Path) -> None:
    bad = _write(mappings_dir / "counterparts.yaml",
                 "version: 1\ninstances:\n  - name: probation\n    counterpart: [probation\n")
    message = _config_error(mappings_dir, bad)
    assert f"{bad}: not valid YAML" in message
    assert "line 4" in message


def test_a_missing_file_is_named(mappings_dir: Path) -> None:
    missing = mappings_dir / "no-such-counterparts.yaml"
    message = _config_error(mappings_dir, missing)
    assert f"{missing}: file is missing" in message


def test_a_missing_kinds_file_is_named(tmp_path: Path) -> None:
    message = _config_error(tmp_path, _counterparts(tmp_path / "c.yaml", GOOD_INSTANCE))
    assert f"{tmp_path / 'referral-kinds.yaml'}: file is missing" in message


def test_every_bad_file_is_listed_at_once(mappings_dir: Path) -> None:
    _write(mappings_dir / "referral-kinds.yaml",
           "version: 1\nkinds:\n  shelter.placement: {counterpart: mio, domain: housing}\n"
           "  haircut: {counterpart: mio, domain: housing}\n")
    bad = _counterparts(mappings_dir / "counterparts.yaml", dict(GOOD_INSTANCE, counterpart="police"))
    message = _config_error(mappings_dir, bad)
    assert f"{mappings_dir / 'referral-kinds.yaml'}: kinds.haircut" in message
    assert f"{bad}: instances.0.counterpart:" in message


def test_gateway_serve_refuses_to_start_with_a_bad_counterparts_file(tmp_path: Path) -> None:
    bad = _counterparts(tmp_path / "counterparts.yaml", dict(GOOD_INSTANCE, colour="red"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_COUNTERPARTS_FILE=str(bad), GATEWAY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'g.db'}")
    try:
        out = subprocess.run([sys.executable, "-m", "gateway", "serve", "--port", str(free_port())], cwd=ROOT,
                             env=env, capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired as exc:  # it started serving instead of refusing
        raise AssertionError(f"`gateway serve` did not exit with a bad {bad}") from exc
    stderr = out.stderr.decode("utf-8", errors="replace")
    assert out.returncode != 0, stderr
    assert str(bad) in stderr and "instances.0.colour" in stderr, stderr
    assert "Traceback" not in stderr, stderr  # a clear message, not a crash
    assert not (tmp_path / "g.db").exists()  # it stopped before touching the store


def test_an_instance_that_must_sign_without_a_pinned_key_is_named(mappings_dir: Path) -> None:
    bad = _counterparts(mappings_dir / "counterparts.yaml", GOOD_INSTANCE,
                        {"name": "mio-kz-35", "counterpart": "mio", "base_url": "http://127.0.0.1:8101", "keys": []})
    message = _config_error(mappings_dir, bad)
    assert f"{bad}: instances.1:" in message and "keys: an instance that must sign" in message
    legacy = _counterparts(mappings_dir / "counterparts.yaml", GOOD_INSTANCE,
                           {"name": "mio-kz-35", "counterpart": "mio", "base_url": "http://127.0.0.1:8101",
                            "keys": [], "require_signatures": False})
    assert "counterparts.yaml" not in _config_error(mappings_dir, legacy)  # only the files this fixture lacks


def test_an_unreadable_pinned_key_stops_start_up_naming_file_and_field(tmp_path: Path) -> None:
    from security.parties import load_pins

    mappings_dir = tmp_path / "full"
    shutil.copytree(MAPPINGS, mappings_dir)

    (tmp_path / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    path = _counterparts(mappings_dir / "counterparts.yaml", {**GOOD_INSTANCE, "keys": [str(tmp_path / "garbage.pem")]},
                         {"name": "mio-kz-35", "counterpart": "mio", "base_url": "http://127.0.0.1:8101",
                          "keys": ["missing.crt.pem"]})
    with pytest.raises(ConfigError) as info:
        load_pins(load_mappings(mappings_dir, counterparts_file=path), counterparts_file=path, home=tmp_path)
    message = str(info.value)
    assert f"{path}: instances.0.keys.0: not a readable key" in message
    assert f"{path}: instances.1.keys.0: cannot read" in message
