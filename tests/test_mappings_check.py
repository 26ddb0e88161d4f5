"""`gateway mappings check DIR`: every error printed with its file and field, exit status non-zero."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ROOT


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(ROOT / "gateway" / "mappings", target)
    return target


def _check(directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", "mappings", "check", str(directory)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_the_shipped_mappings_pass(tmp_path: Path) -> None:
    result = _check(ROOT / "gateway" / "mappings")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_unknown_field_is_named_with_file_and_field(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    path = d / "routing-matrix.yaml"
    path.write_text(path.read_text().replace("    referrals: [shelter.placement]",
                                             "    referrals: [shelter.placement]\n    priority: high"))
    result = _check(d)
    assert result.returncode != 0
    assert f"{path}: rules.0.priority: Extra inputs are not permitted" in result.stderr


@pytest.mark.parametrize("how", ["duplicate key", "code used twice"])
def test_duplicate_code_is_named_with_file_and_field(tmp_path: Path, how: str) -> None:
    d = _copy(tmp_path)
    path = d / "codes" / "mio.yaml"
    text = path.read_text()
    if how == "duplicate key":
        text = text.replace("      shelter.placement: SHELTER_PLACEMENT",
                            "      shelter.placement: SHELTER_PLACEMENT\n      shelter.placement: SHELTER")
        expected = "duplicate key 'shelter.placement'"
    else:
        text = text.replace("      referral.rejected: REJECTED", "      referral.rejected: ACCEPTED")
        expected = "tables.mio.status: Value error, codes.referral.rejected: code 'ACCEPTED' is also used for"
    path.write_text(text)
    result = _check(d)
    assert result.returncode != 0
    assert str(path) in result.stderr and expected in result.stderr, result.stderr


def test_dangling_reference_is_named_with_file_and_field(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    kinds = d / "referral-kinds.yaml"
    kinds.write_text("\n".join(line for line in kinds.read_text().splitlines()
                               if not line.strip().startswith("employment.track")) + "\n")
    result = _check(d)
    assert result.returncode != 0
    assert (f"{d / 'routing-matrix.yaml'}: rules.3.referrals.0: referral kind 'employment.track' is not in"
            " referral-kinds.yaml") in result.stderr


def test_every_error_is_listed_not_only_the_first(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / "routing-matrix.yaml").write_text("version: 1\nrules: [{domain: space}]\n")
    (d / "codes" / "mio.yaml").write_text("version: 0\ntables: {}\n")
    result = _check(d)
    assert result.returncode != 0
    assert "routing-matrix.yaml: rules.0.domain" in result.stderr
    assert "mio.yaml: version" in result.stderr


def test_sla_policy_and_calendar_are_checked_too(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / "calendar-kz.yaml").write_text("version: 1\ndays_off: [2026-13-01]\nworking_days: []\n")
    result = _check(d)
    assert result.returncode != 0
    assert "calendar-kz.yaml" in result.stderr


def test_impossible_yaml_date_is_an_error_not_a_crash(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / "routing-matrix.yaml").write_text("version: 1\nrules: []\nwhen: 2026-13-01\n")
    result = _check(d)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "routing-matrix.yaml" in result.stderr


def _version_file(d: Path, name: str, version: int, table: str = "mio.service") -> Path:
    (d / "codes" / "versions").mkdir(exist_ok=True)
    path = d / "codes" / "versions" / name
    path.write_text(f"version: {version}\ntables:\n  {table}:\n    codes:\n      shelter.placement: SHELTER_V2\n")
    return path


def test_a_code_table_version_is_checked_like_the_current_file(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    good = _version_file(d, "mio.v2.yaml", 2)
    assert _check(d).returncode == 0
    good.unlink()
    cases = [
        (_version_file(d, "mio.v3.yaml", 4), "version: 4 does not match the file name"),
        (_version_file(d, "mio.v5.yaml", 5, table="con.document"), "tables.con.document: not a table of"),
        (_version_file(d, "nobody.v2.yaml", 2), "the name must be <code file>.v<N>.yaml"),
        (_version_file(d, "mio.v1.yaml", 1), "version: 1 is already mappings/codes/mio.yaml's version"),
    ]
    result = _check(d)
    assert result.returncode != 0
    for path, expected in cases:
        assert f"{path}: {expected}" in result.stderr, result.stderr


def test_an_instance_naming_a_version_not_loaded_is_refused(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    path = d / "counterparts.yaml"
    text = path.read_text()
    assert "  - name: mio-kz-35\n" in text
    path.write_text(text.replace("  - name: mio-kz-35\n", "  - name: mio-kz-35\n    mapping_version: 7\n", 1))
    result = _check(d)
    assert result.returncode != 0
    assert f"{path}: instances." in result.stderr and ".mapping_version: no version 7 of the mio code tables" \
        in result.stderr, result.stderr
