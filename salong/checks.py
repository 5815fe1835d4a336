"""Checks of user-facing settings shared by generation and training (bool is not an
integer here), and the one seed rule: a whole number from 0 to `MAX_SEED`."""

from __future__ import annotations

import math
import secrets
import stat
from pathlib import Path
from typing import Any

import numpy as np

from salong.errors import SalongError

MAX_SEED = 2**63 - 2  # torch generators take 64-bit seeds; the sampler's noise uses seed + 1


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_seed(seed: Any, name: str = "seed") -> int:
    """A seed as an int, or a one-line error naming `name` and the allowed range. Songs,
    batches and training runs all take seeds by this rule."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise SalongError(f"{name} must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    return int(seed)


def refuse_special(path: str | Path, what: str) -> None:
    """A one-line error if `path` (or what a symlink names) is a named pipe, device or socket:
    salong reads only regular files (and folders) as inputs, since reading a FIFO waits for a
    writer for ever and a device may never end. Checked before anything opens it; a missing
    path or a folder is left to the caller's own message."""
    try:
        mode = Path(path).stat().st_mode
    except (OSError, ValueError):
        return
    kind = special_kind(mode)
    if kind is not None:
        raise SalongError(f"{what} {str(path)!r} is {kind}, not a regular file; salong reads inputs only from files, "
                          "so save it to a file and give that")


def special_kind(mode: int) -> str | None:
    """What a file of `st_mode` `mode` is, if neither a regular file nor a folder (a named pipe,
    a device, a socket): salong reads none of these."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
            else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")


def random_seed() -> int:
    """A seed for a request that gives none: 31 random bits, short enough to type back."""
    return secrets.randbits(31)
