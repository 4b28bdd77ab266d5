"""Module paths, versions and file names, validated as golang.org/x/mod/module does, and the
case encoding of the GOPROXY protocol (`!` + lower case for each upper-case letter)."""

from __future__ import annotations

import re

WINDOWS_NAMES = {
    "con", "prn", "aux", "nul",
    *(f"com{i}" for i in range(1, 10)),
    *(f"lpt{i}" for i in range(1, 10)),
}  # fmt: skip
MAX_PATH = 500
_MOD_CHARS = re.compile(r"^[A-Za-z0-9._~-]+$")
_FIRST_ELEM = re.compile(r"^[a-z0-9.-]+$")
_FILE_CHARS = re.compile(r"^[\w!#$%&()+,\-.=@\[\]^{}~ ]+$")
_MAJOR_SUFFIX = re.compile(r"/v([0-9.]+)$")
_GOPKG_SUFFIX = re.compile(r"\.v(0|[1-9][0-9]*)(-unstable)?$")

_NUM = r"0|[1-9][0-9]*"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
SEMVER = re.compile(
    rf"^v(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})"
    rf"(?:-(?P<pre>{_PRE_ID}(?:\.{_PRE_ID})*))?(?P<incompatible>\+incompatible)?$"
)


class InvalidPath(ValueError):
    """A module path, version or file name the go command would reject."""


class UnknownVersion(InvalidPath):
    """A well-formed string that is not a canonical version for this module (a branch name,
    `v1.0`, a major that does not match the path): this mirror does not resolve queries, so
    the answer is "not here" (404), and the go command may try its next source."""


_VERSION_CHARS = re.compile(r"^[A-Za-z0-9._+-]{1,128}$")


def _check_elem(elem: str, *, file: bool = False) -> None:
    if not elem:
        raise InvalidPath("empty path element")
    if elem.strip(".") == "":
        raise InvalidPath(f"invalid path element {elem!r}")
    if elem[0] == "." and not file:
        raise InvalidPath("leading dot in path element")
    if elem[-1] == ".":
        raise InvalidPath("trailing dot in path element")
    if not (_FILE_CHARS if file else _MOD_CHARS).match(elem):
        raise InvalidPath(f"invalid character in {elem!r}")
    if elem.split(".", 1)[0].lower() in WINDOWS_NAMES:
        raise InvalidPath(f"{elem!r} is a reserved name on Windows")


def check_module_path(path: str) -> str:
    """Raise InvalidPath unless `path` is a valid module path (module.CheckPath)."""
    if not path or len(path) > MAX_PATH or path.startswith("/") or path.endswith("/"):
        raise InvalidPath("malformed module path")
    elements = path.split("/")
    for elem in elements:
        _check_elem(elem)
    first = elements[0]
    if "." not in first or first.startswith("-") or not _FIRST_ELEM.match(first):
        raise InvalidPath("first path element must be a lower-case domain name")
    if path.startswith("gopkg.in/"):
        if not _GOPKG_SUFFIX.search(path):
            raise InvalidPath("gopkg.in path without a .vN suffix")
    elif match := _MAJOR_SUFFIX.search(path):
        number = match.group(1)
        if number.startswith("0") or number == "1" or "." in number:
            raise InvalidPath(f"invalid major version suffix /v{number}")
    return path


def path_major(path: str) -> int | None:
    """The major version a path's /vN (or gopkg.in .vN) suffix requires, if any."""
    match = _GOPKG_SUFFIX.search(path) if path.startswith("gopkg.in/") else None
    match = match or _MAJOR_SUFFIX.search(path)
    return int(match.group(1)) if match else None


def check_version(path: str, version: str) -> str:
    """Raise InvalidPath for a malformed version, UnknownVersion unless `version` is canonical
    and fits the module path's major."""
    if not _VERSION_CHARS.match(version):
        raise InvalidPath(f"malformed version {version[:130]!r}")
    match = SEMVER.match(version)
    if match is None:
        raise UnknownVersion(f"{version!r} is not a canonical semantic version")
    major = int(match.group("major"))
    required = path_major(path)
    if match.group("incompatible"):
        if major < 2 or required is not None:
            raise UnknownVersion("+incompatible needs major >= 2 and a path without /vN")
    elif required is not None:
        if path.startswith("gopkg.in/") and required in (0, 1):
            if major != required:
                raise UnknownVersion(f"version {version} does not match path {path}")
        elif major != required:
            raise UnknownVersion(f"version {version} does not match path {path}")
    elif major >= 2:
        raise UnknownVersion(f"{version} needs a /v{major} path or +incompatible")
    return version


def check_file_path(name: str) -> None:
    """Raise InvalidPath unless `name` is a valid file path inside a module (CheckFilePath)."""
    if not name or name.startswith("/") or name.endswith("/") or "\\" in name:
        raise InvalidPath(f"invalid file path {name!r}")
    for elem in name.split("/"):
        _check_elem(elem, file=True)


def escape(value: str) -> str:
    """Case-encode a path or version for URLs and file names."""
    return re.sub(r"[A-Z]", lambda m: "!" + m.group(0).lower(), value)


def unescape(value: str) -> str:
    """Decode a case-encoded path or version; raise InvalidPath on upper case or a bad `!`."""
    if re.search(r"[A-Z]", value):
        raise InvalidPath("upper-case letters must be encoded as !x")
    if re.search(r"!(?![a-z])", value):
        raise InvalidPath("'!' must be followed by a lower-case letter")
    return re.sub(r"!([a-z])", lambda m: m.group(1).upper(), value)


def semver_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
    """Order canonical versions as semver.Compare does: a pre-release sorts before its
    release; numeric identifiers before alphanumeric ones, numerically."""
    match = SEMVER.match(version)
    if match is None:
        raise InvalidPath(f"{version!r} is not a canonical semantic version")
    pre = match.group("pre")
    idents = tuple(
        (0, int(p), "") if p.isdigit() else (1, 0, p) for p in (pre.split(".") if pre else ())
    )
    numbers = (int(match.group("major")), int(match.group("minor")), int(match.group("patch")))
    return (*numbers, 0 if pre else 1, idents)


def split_reference(reference: str) -> tuple[str, str]:
    """`module@version`, `module@latest` or `module` (= `@latest`): the valid module path
    and the canonical version (or "latest"). Raises InvalidPath (UnknownVersion for a query
    such as a branch name, which this mirror does not resolve)."""
    module, at, version = reference.strip().rpartition("@")
    if not at:
        module, version = version, "latest"
    check_module_path(module)
    if version != "latest":
        check_version(module, version)
    return module, version
