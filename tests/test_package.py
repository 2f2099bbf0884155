"""The package's metadata: every file pyproject.toml lists as package data exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_listed_package_data_exists():
    text = (ROOT / "pyproject.toml").read_text()
    listing = re.search(r"^\[tool\.setuptools\.package-data\]\s*\ndereverb\s*=\s*\[([^\]]*)\]", text, re.M)
    patterns = re.findall(r'"([^"]+)"', listing.group(1))
    assert "py.typed" in patterns  # the package declares its type hints (PEP 561)
    for pattern in patterns:
        assert list((ROOT / "src" / "dereverb").glob(pattern)), f"package data {pattern!r} matches no file"
