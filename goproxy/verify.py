"""What a module's files must satisfy before they are committed to the cache.

- `.zip`: the module zip rules of golang.org/x/mod/zip (every file under `module@version/`,
  clean valid paths, no case collisions, go.mod only at the root, size limits) and, unless the
  module is private, its `h1:` hash equal to the checksum database's.
- `.mod`: size limit and `h1:` hash likewise (`check_mod`).
- `.info` (and `@latest`): a JSON object naming the requested (a valid) version, with a
  string `Time` if any (`check_version_info`, `check_info`).

The zip is checked as it is filled (`ZipVerifier`, on the spool file); `.info` and `.mod` are
small and checked whole, in memory, before they are kept (service.small_file).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import posixpath
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path

from mirror.errors import DigestMismatch, InvalidContent

from .paths import InvalidPath, check_file_path, check_version

MAX_ZIP = 500 << 20
MAX_GO_MOD = 16 << 20
MAX_LICENSE = 16 << 20
MAX_INFO = 64 << 10
_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


def h1(files: Iterable[tuple[str, bytes]]) -> str:
    """dirhash.Hash1 over (name, content) pairs: lines sorted by file name."""
    lines = [
        f"{hashlib.sha256(data).hexdigest()}  {name}\n"
        for name, data in sorted(files, key=lambda item: item[0].encode())
    ]
    summary = hashlib.sha256("".join(lines).encode()).digest()
    return "h1:" + base64.b64encode(summary).decode()


def check_zip(path: Path, module: str, version: str) -> list[str]:
    """Check the module zip rules (from the central directory alone); return the names of
    the files to hash. Raise InvalidContent."""
    if path.stat().st_size > MAX_ZIP:
        raise InvalidContent("module zip too large")
    prefix = f"{module}@{version}/"
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise InvalidContent(f"not a zip file: {e}") from None
    seen: set[str] = set()
    total = 0
    entries: list[str] = []
    with archive:
        for info in archive.infolist():
            name = info.filename
            if not name.startswith(prefix):
                raise InvalidContent(f"{name!r} is not under {prefix!r}")
            relative = name[len(prefix) :]
            if not relative:
                continue
            is_dir = relative.endswith("/")
            relative = relative.rstrip("/") if is_dir else relative
            if posixpath.normpath(relative) != relative:
                raise InvalidContent(f"{name!r} is not a clean path")
            try:
                check_file_path(relative)
            except InvalidPath as e:
                raise InvalidContent(f"{name!r}: {e}") from None
            if relative.lower() in seen:
                raise InvalidContent(f"{name!r} collides with another file")
            seen.add(relative.lower())
            if is_dir:
                continue
            base = posixpath.basename(relative)
            if base.lower() == "go.mod" and relative != "go.mod":
                raise InvalidContent("go.mod is only allowed at the module root")
            total += info.file_size
            if total > MAX_ZIP:
                raise InvalidContent("module contents too large")
            if relative == "go.mod" and info.file_size > MAX_GO_MOD:
                raise InvalidContent("go.mod too large")
            if relative == "LICENSE" and info.file_size > MAX_LICENSE:
                raise InvalidContent("LICENSE too large")
            entries.append(info.filename)
    return entries


def zip_h1(path: Path, names: list[str]) -> str:
    """dirhash.HashZip: each file streamed through sha256, never read whole into memory."""
    lines = []
    with zipfile.ZipFile(path) as archive:
        for name in sorted(names, key=str.encode):
            digest = hashlib.sha256()
            with archive.open(name) as member:
                while block := member.read(1 << 20):
                    digest.update(block)
            lines.append(f"{digest.hexdigest()}  {name}\n")
    summary = hashlib.sha256("".join(lines).encode()).digest()
    return "h1:" + base64.b64encode(summary).decode()


def _expect(actual: str, expected: str | None, what: str) -> None:
    if expected is not None and actual != expected:
        raise DigestMismatch(f"{what}: checksum database says {expected}, upstream gave {actual}")


class ZipVerifier:
    def __init__(self, module: str, version: str, expected: str | None) -> None:
        self.module, self.version, self.expected = module, version, expected

    def update(self, chunk: bytes) -> None:
        """Nothing to do per chunk: a zip is checked through its central directory."""

    def verify(self, size: int, path: Path) -> None:
        names = check_zip(path, self.module, self.version)
        if self.expected is not None:  # hashing costs a full read: only when it is compared
            _expect(zip_h1(path, names), self.expected, "zip")


def check_mod(data: bytes, expected: str | None) -> None:
    """A go.mod within its size limit and, when `expected` is given, of that `h1:` hash;
    InvalidContent or DigestMismatch otherwise."""
    if len(data) > MAX_GO_MOD:
        raise InvalidContent("go.mod too large")
    _expect(h1([("go.mod", data)]), expected, "go.mod")


def check_info(data: bytes, module: str) -> str:
    """The version an `.info`/`@latest` answer names; InvalidContent unless it is a JSON
    object with a valid `Version` of `module` and, if any, an RFC 3339 `Time` string (what the
    go command decodes it into)."""
    try:
        info = json.loads(data)
    except ValueError:  # UnicodeDecodeError included
        raise InvalidContent("not JSON") from None
    if not isinstance(info, dict) or not isinstance(info.get("Version"), str):
        raise InvalidContent("not a JSON object with a Version string")
    try:
        version = check_version(module, info["Version"])
    except InvalidPath as e:
        raise InvalidContent(str(e)) from None
    when = info.get("Time")
    if when is not None:
        try:
            if not _RFC3339.match(when):
                raise ValueError
            dt.datetime.fromisoformat(when)
        except (TypeError, ValueError):
            raise InvalidContent("Time is not an RFC 3339 time") from None
    return version


def check_version_info(data: bytes, module: str, version: str) -> None:
    """A `.info` within its size limit that describes `version`; InvalidContent otherwise."""
    if len(data) > MAX_INFO:
        raise InvalidContent("file too large")
    if check_info(data, module) != version:
        raise InvalidContent(f".info does not describe {version}")
