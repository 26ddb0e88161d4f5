"""The hashed lock files agree with pyproject.toml's ranges, with each other, and with what the tests run on."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from gateway.config import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def _lock(name: str) -> dict[str, Version]:
    """name -> version of every pin; each pin must carry hashes (pip --require-hashes needs them all)."""
    text = (ROOT / "requirements" / name).read_text(encoding="utf-8")
    pins: dict[str, Version] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = PIN.match(block)
        if match:
            assert "--hash=sha256:" in block, f"{name}: {match[1]} has no hash"
            pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def _requirements(*extras: str) -> list[Requirement]:
    lines = [*PYPROJECT["dependencies"], *(r for e in extras for r in PYPROJECT["optional-dependencies"][e])]
    return [Requirement(line) for line in lines]


@pytest.mark.parametrize(("lock", "extras"), [("gateway.txt", ("examples",)), ("test.txt", ("examples", "test"))])
def test_every_requirement_of_pyproject_is_locked_within_its_range(lock: str, extras: tuple[str, ...]) -> None:
    pins = _lock(lock)
    for requirement in _requirements(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock}: {requirement} is not locked (run `make lock`)"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"{lock}: {name}=={pins[name]} is outside pyproject.toml's {requirement} (run `make lock`)"


def test_production_runs_the_versions_the_tests_run() -> None:
    tested = _lock("test.txt")
    for name, version in _lock("gateway.txt").items():
        assert tested.get(name) == version, f"gateway.txt has {name}=={version}, test.txt {tested.get(name)}"


def test_this_environment_is_the_locked_one() -> None:
    """`make test` and CI install requirements/test.txt; a drifted environment would test other programs."""
    drift = []
    for name, version in _lock("test.txt").items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            drift.append(f"{name}=={version} not installed")
            continue
        if installed != version:
            drift.append(f"{name}: installed {installed}, locked {version}")
    assert not drift, "install with `pip install --require-hashes -r requirements/test.txt`:\n" + "\n".join(drift)
