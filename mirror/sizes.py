"""Sizes as operators write them: `50GiB`, `500 MB`, `1073741824`.

Pure Python (no Django): config/settings.py reads MIRROR_CACHE_MAX_BYTES with it.
"""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes of a size: a whole number, or a number with a unit (kB, MB, GB, TB are powers
    of 1000; KiB, MiB, GiB, TiB powers of 1024). Raises ValueError."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"a size cannot be negative: {text}")
        return text
    match = _SIZE.match(str(text))
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {str(text)[:40]!r} (e.g. 1073741824, 500MB, 50GiB)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.lower()])
