"""The checks of single setting values (`config.py`'s ranges and messages): the error class and small check
builders, kept apart so that `config.py` holds the settings themselves."""

from __future__ import annotations

import json
import math
from typing import Any, Callable

from .errors import InputError


class ConfigError(InputError):
    """A setting (a --set override or a field of a config.json) that does not fit the dataclasses."""


def _describe(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool)) or value is None else repr(value)
    return f"{type(value).__name__} {text[:60]}"


_KIND = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _named(name: str, shown: str) -> str:
    """A setting and its value as the user wrote them: "section.field=value", or "--flag value"."""
    return f"{name} {shown}" if name.startswith("-") else f"{name}={shown}"


def _item(name: str, i: int) -> str:
    """What messages call element i of a list setting: "section.field[i]"; a flag is named as typed ("--shots")."""
    return name if name.startswith("-") else f"{name}[{i}]"


def _shown(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _between(low: float, high: float = math.inf) -> Callable[[float, str], None]:
    """A check that `value` lies in [low, high]."""
    wanted = f"{_shown(low)} or more" if high == math.inf else f"a value from {_shown(low)} to {_shown(high)}"

    def check(value: float, name: str) -> None:
        if not low <= value <= high:
            raise ConfigError(f"{_named(name, _shown(value))} is out of range: give {wanted}")
    return check


def _positive(value: float, name: str) -> None:
    if not value > 0:
        raise ConfigError(f"{_named(name, _shown(value))} is out of range: give a number > 0")


def _one_of(*choices: str) -> Callable[[str, str], None]:
    """A check that a string setting is one of `choices`."""
    def check(value: str, name: str) -> None:
        if value not in choices:
            raise ConfigError(f"{_named(name, repr(value))} is not one of {', '.join(choices)}")
    return check
