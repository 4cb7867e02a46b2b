"""Safety limits on hostile or absurd input: every command runs in bounded time and memory.

A value past a limit is refused before any work starts, with a message that names the limit and how to go
past it: `talking-heads --limit NAME=VALUE COMMAND ...` (repeatable), or `limits.overrides(["NAME=VALUE"])`
around library calls. The defaults are far beyond any real use of this project (a paper-sized run is
100,000 steps, fine-tuning 40 epochs, a driver a few minutes).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Iterator

from .errors import InputError

LIMITS: dict[str, tuple[float, str]] = {  # name -> (default, what it bounds)
    "duration": (3600.0, "seconds of a built-in motion (animate --duration)"),
    "audio_seconds": (3600.0, "seconds of speech that drive an avatar (animate --audio / --say)"),
    "driver_frames": (108_000, "frames of a driver (a video, a folder of frames or a .npy of landmarks; one hour at 30 fps)"),
    "epochs": (10_000, "fine-tuning epochs (--epochs; the paper uses 40)"),
    "finetune_steps": (1_000_000, "fine-tuning steps (finetune.steps)"),
    "steps": (10_000_000, "meta-learning steps (train --steps; the paper's run is 100,000)"),
    "shots": (10_000, "few-shot frames T of an avatar (--frames, --shots)"),
    "image_pixels": (180_000_000, "pixels of one image (width x height), checked before decoding"),
    "video_frame_pixels": (36_000_000, "pixels of one video frame (width x height; 8K is 33 million)"),
}

_overrides: dict[str, float] = {}


class LimitError(InputError):
    """A value past a safety limit; the message says which limit and how to raise it."""


def get(name: str) -> float:
    if name not in LIMITS:
        raise KeyError(name)
    return _overrides.get(name, LIMITS[name][0])


def check(name: str, value: float, what: str) -> None:
    """Refuse `value` (named `what` in the message) when it is past the limit `name`."""
    limit = get(name)
    if value > limit:
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        raise LimitError(f"{what}: {shown} is over the limit of {limit:g} {LIMITS[name][1]}; to go past it, pass "
                         f"--limit {name}={shown} before the command (talking-heads --limit {name}={shown} ...)")


def finite_positive(value: float | None, what: str, *, allow_zero: bool = False) -> None:
    """Refuse NaN, infinities and negative (or zero) numbers given for `what`."""
    if value is None:
        return
    if not math.isfinite(value):
        raise InputError(f"{what} must be a finite number, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        raise InputError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value:g}")


# --- the checks of counts and lengths that callers give (CLI flags, web fields, config settings, library
# arguments): one function per quantity, called wherever that quantity comes in; `what` names it in messages

def whole_number(value, what: str) -> int:
    """`value` as an int: an integer, a float with no fractional part (a number field may send 12.0) or the
    text of an integer (a page may send "12"); InputError for anything else (2.7, "2.5", NaN, None), which
    int() would truncate or misread."""
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    elif isinstance(value, numbers.Integral):
        return int(value)
    elif isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    raise InputError(f"{what} must be a whole number, got {value!r}")


def _count(value, what: str, limit: str, at_least: int, unit: str) -> int:
    """A whole number >= at_least under the limit `limit`; `unit` (singular) words the message."""
    number = whole_number(value, what)
    if number < at_least:
        wanted = f"at least 1 {unit}" if at_least == 1 else f"{at_least} or more {unit}s"
        raise InputError(f"{what} {number}: must be >= {at_least} (give {wanted})")
    check(limit, number, what)
    return number


def check_epochs(epochs, what: str = "epochs", *, at_least: int = 0, at_most: int | None = None) -> int | None:
    """Fine-tuning epochs: a whole number >= `at_least`, <= `at_most` (a caller's own cap, e.g. a server's
    slider) and under the `epochs` limit. None (the model's default) passes."""
    if epochs is None:
        return None
    number = whole_number(epochs, what)
    if at_most is not None and not at_least <= number <= at_most:
        raise InputError(f"{what} must be between {at_least} and {at_most}, got {number}")
    return _count(number, what, "epochs", at_least, "epoch")


def check_shots(frames, what: str = "T") -> int | None:
    """Few-shot frames T of an avatar: at least 1 and under the `shots` limit. None (the default) passes."""
    return None if frames is None else _count(frames, what, "shots", 1, "frame")


def check_steps(steps, what: str = "steps") -> int | None:
    """Meta-learning steps: at least 1 and under the `steps` limit. None passes."""
    return None if steps is None else _count(steps, what, "steps", 1, "step")


def check_finetune_steps(steps, what: str = "fine-tuning steps") -> int | None:
    """Fine-tuning steps (0: the epochs decide) under the `finetune_steps` limit. None passes."""
    return None if steps is None else _count(steps, what, "finetune_steps", 0, "step")


FRAME_SIZES = (64, 2048)  # the smallest and largest side (px) of rendered frames (--size)


def check_frame_size(size, what: str = "--size") -> int | None:
    """The side (px) of rendered frames: a whole number from 64 to 2048. None (automatic) passes."""
    if size is None:
        return None
    number = whole_number(size, what)
    low, high = FRAME_SIZES
    if not low <= number <= high:
        raise InputError(f"{what} {number}: give a frame size from {low} to {high} px (e.g. 256 or 512)")
    return number


def check_seconds(seconds: float | None, what: str) -> float | None:
    """A length in seconds (a built-in motion, a stream to send or record): finite, > 0 and under the
    `duration` limit. None (the default) passes."""
    if seconds is None:
        return None
    finite_positive(seconds, what)
    check("duration", seconds, what)
    return seconds


def parse(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or name not in LIMITS:
            raise InputError(f"--limit {item}: expected NAME=VALUE with NAME one of {sorted(LIMITS)}")
        try:
            value = float(raw)
        except ValueError:
            raise InputError(f"--limit {item}: {raw!r} is not a number") from None
        if math.isnan(value) or value <= 0:
            raise InputError(f"--limit {item}: give a positive number")
        out[name] = value
    return out


@contextlib.contextmanager
def overrides(items: list[str] | dict[str, float]) -> Iterator[None]:
    """Limits changed for the duration of the block ("NAME=VALUE" strings or a dict)."""
    new = parse(list(items)) if not isinstance(items, dict) else dict(items)
    saved = dict(_overrides)
    _overrides.update(new)
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(saved)


__all__ = ["LIMITS", "LimitError", "check", "check_epochs", "check_finetune_steps", "check_seconds", "check_shots",
           "check_steps", "finite_positive", "get", "overrides", "whole_number"]
