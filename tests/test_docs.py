"""The docs say what the code does: settings, check ids, pins, the version, the site."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from django_streamer.conf import DEFAULTS, VALIDATORS, Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SETTINGS_PAGE = (ROOT / "docs" / "settings.md").read_text()


def documented() -> dict[str, tuple[str, str]]:
    """Each setting heading's ``(type, default)``, from "`int` or `None`, default `5`."."""
    sections = re.split(r"^### ", SETTINGS_PAGE, flags=re.M)[1:]
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
        assert f"`{kind}{top:03d}`" in SETTINGS_PAGE or f"{kind}{top:03d}`" in SETTINGS_PAGE, kind


def test_the_readmes_settings_table_lists_every_setting_with_its_default():
    rows = dict(re.findall(r"^\| \[`(STREAMER_\w+)`\]\([^)]*\) \| `([^`]+)`", README, flags=re.M))
    assert set(rows) == set(DEFAULTS)
    for name, value in DEFAULTS.items():
        assert rows[name] == repr(value), name


def test_every_python_block_of_the_readme_is_python():
    for block in re.findall(r"```python\n(.*?)```", README, flags=re.S):
        compile(block, "README.md", "exec")


def test_the_docs_home_page_is_the_readme():
    """docs/index.md is the README with its links made relative to docs/: regenerate it
    with ``python -c "import pathlib as p; t = p.Path('README.md').read_text();
    p.Path('docs/index.md').write_text(t.replace('](docs/', ']('))"``."""
    home = (ROOT / "docs" / "index.md").read_text()
    assert home == README.replace("](docs/", "](")


def test_the_readme_stays_short():
    assert len(README.encode()) <= 20 * 1024


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
    pages = README + "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    for older in re.findall(r"Upgrading from (\d+\.\d+)", pages):
        assert tuple(int(part) for part in older.split(".")) < current, older


@pytest.mark.docs
def test_the_docs_site_builds_strict(tmp_path: Path) -> None:
    """mkdocs (the docs extra) builds the site with every link and anchor resolved."""
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert (tmp_path / "settings" / "index.html").exists()
