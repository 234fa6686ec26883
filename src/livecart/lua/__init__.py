"""Redis scripts, one `.lua` file each, shipped as package data and read once."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def script(name: str) -> str:
    """The text of `name`.lua in this package."""
    return files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
