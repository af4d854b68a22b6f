"""The README documents exactly the settings conf.py has, with their defaults and types."""

from __future__ import annotations

import re
from pathlib import Path

from django_streamer.conf import DEFAULTS, VALIDATORS, Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def documented() -> dict[str, tuple[str, str]]:
    """Each setting heading's ``(type, default)``, from "`int` or `None`, default `5`."."""
    sections = re.split(r"^### ", README, flags=re.M)[1:]
    found = {}
    for section in sections:
        heading = re.match(r"`(STREAMER_\w+)`\n\n(.*?), default `([^`]+)`", section, flags=re.S)
        if heading:
            name, kind, default = heading.groups()
            types = re.findall(r"`([^`]+)`", kind)
            assert types and re.fullmatch(r"(`[^`]+`( or )?)+", kind), f"{name}: {kind!r}"
            found[name] = (" | ".join(types), default)
    return found


def test_every_setting_is_documented_with_its_default():
    docs = documented()
    assert set(docs) == set(DEFAULTS)
    for name, value in DEFAULTS.items():
        assert docs[name][1] == repr(value), name


def test_every_documented_type_is_the_propertys_type():
    docs = documented()
    for name in DEFAULTS:
        prop = vars(Settings)[name]
        annotation = prop.func.__annotations__["return"]  # a cached_property
        assert docs[name][0] == annotation, name


def test_every_setting_has_a_property_and_a_validator():
    properties = {n for n in vars(Settings) if n.startswith("STREAMER_")}
    assert properties == set(DEFAULTS) == set(VALIDATORS)


def test_every_default_passes_its_own_validator():
    for name, value in DEFAULTS.items():
        VALIDATORS[name](value, what=name)


def test_every_check_id_in_the_code_is_in_the_readme():
    from django_streamer import checks

    source = Path(checks.__file__).read_text()
    ids = set(re.findall(r"django_streamer\.([EW]\d{3})", source))
    numbers = {i: int(i[1:]) for i in ids}
    for kind in "EW":
        top = max(n for i, n in numbers.items() if i[0] == kind)
        assert f"`{kind}{top:03d}`" in README or f"{kind}{top:03d}`" in README, kind


def test_every_installed_test_dependency_is_pinned():
    """tests/run.sh installs from tests/constraints.txt: a package it installs
    without a pin would float to whatever upstream released last."""
    import platform
    from importlib.metadata import distributions

    from packaging.requirements import Requirement

    root = Path(__file__).resolve().parent.parent
    python = ".".join(platform.python_version_tuple()[:2])
    pinned = set()
    for line in (root / "tests" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"python_version": python}):
            pinned.add(re.sub(r"[-_.]+", "-", req.name).lower())
    if python not in ("3.10", "3.11", "3.12"):
        import pytest

        pytest.skip(f"the pins cover Python 3.10 to 3.12, not {python}")
    installed = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower() for d in distributions()}
    unpinned = installed - pinned - {"django", "django-streamer", "pip", "setuptools", "wheel"}
    assert not unpinned, f"add these to tests/constraints.txt: {sorted(unpinned)}"


def test_the_version_is_the_changelogs_latest_and_newer_than_any_upgrade_the_readme_names():
    root = Path(__file__).resolve().parent.parent
    version = re.findall(r'^version = "([^"]+)"', (root / "pyproject.toml").read_text(), re.M)[0]
    changelog = (root / "docs" / "changelog.md").read_text()
    assert re.findall(r"^## (\S+)", changelog, flags=re.M)[0] == version
    current = tuple(int(part) for part in version.split(".")[:2])
    for older in re.findall(r"Upgrading from (\d+\.\d+)", README):
        assert tuple(int(part) for part in older.split(".")) < current, older
