"""The README documents exactly the settings conf.py has, with their defaults."""

from __future__ import annotations

import re
from pathlib import Path

from django_streamer.conf import DEFAULTS, Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def documented() -> dict[str, str]:
    sections = re.split(r"^### ", README, flags=re.M)[1:]
    found = {}
    for section in sections:
        heading = re.match(r"`(STREAMER_\w+)`", section)
        if heading:
            default = re.search(r"default `([^`]+)`", section)
            assert default, f"{heading.group(1)} has no default in the README"
            found[heading.group(1)] = default.group(1)
    return found


def test_every_setting_is_documented_with_its_default():
    docs = documented()
    assert set(docs) == set(DEFAULTS)
    for name, value in DEFAULTS.items():
        assert docs[name] == repr(value), name


def test_every_setting_has_a_property():
    properties = {n for n in vars(Settings) if n.startswith("STREAMER_")}
    assert properties == set(DEFAULTS)
