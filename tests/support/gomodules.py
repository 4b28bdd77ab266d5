"""Synthetic Go modules laid out as a static GOPROXY tree, plus a static server for it.

The tree follows the GOPROXY protocol (https://go.dev/ref/mod#goproxy-protocol), so any
static file server can act as an upstream module proxy::

    mods = [Module("example.com/Upper/Mod", "v1.0.0"), Module("example.com/old",
            "v2.0.0+incompatible"), Module("example.com/lib/v2", "v2.1.0", pad=1 << 20)]
    write_tree(root, mods)
    with StaticServer(root) as upstream:
        ...  # GOPROXY=upstream.url

Everything is deterministic: the same modules always give byte-identical zips, so the ``h1:``
hashes (``Module.h1()``, ``h1_zip``, ``h1_mod``) are stable across runs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.process import Service

from .net import free_port, wait_http

__all__ = [
    "Module",
    "StaticServer",
    "escape",
    "h1_mod",
    "h1_zip",
    "is_pseudo_version",
    "semver_key",
    "unescape",
    "write_tree",
]

# Canonical semver as the go command wants it in a proxy: no build metadata except
# "+incompatible".
_CANONICAL = re.compile(
    r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(\+incompatible)?$"
)
# golang.org/x/mod/module.pseudoVersionRE
_PSEUDO = re.compile(
    r"^v[0-9]+\.(0\.0-|\d+\.\d+-([^+]*\.)?0\.)\d{14}-[A-Za-z0-9]+(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
)
_MAJOR_SUFFIX = re.compile(r"/v([0-9]+)$")
# fmt: off
_GO_KEYWORDS = frozenset({
    "break", "case", "chan", "const", "continue", "default", "defer", "else", "fallthrough",
    "for", "func", "go", "goto", "if", "import", "interface", "map", "package", "range",
    "return", "select", "struct", "switch", "type", "var",
})
# fmt: on
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_CHUNK = 1024 * 1024


# -- names and versions ------------------------------------------------------------------
def escape(path_or_version: str) -> str:
    """Go module case-encoding: every upper-case ASCII letter becomes ``!`` + lower case."""
    return re.sub(r"[A-Z]", lambda m: "!" + m.group(0).lower(), path_or_version)


def unescape(escaped: str) -> str:
    """Inverse of :func:`escape` (``!x`` -> ``X``); raises ``ValueError`` on bad input."""
    if re.search(r"[A-Z]|![^a-z]|!$", escaped):
        raise ValueError(f"invalid escaped module path or version: {escaped!r}")
    return re.sub(r"!([a-z])", lambda m: m.group(1).upper(), escaped)


def is_pseudo_version(version: str) -> bool:
    """Whether ``version`` is a pseudo-version (as ``module.IsPseudoVersion``)."""
    return version.count("-") >= 2 and bool(_PSEUDO.match(version))


def semver_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
    """Sort key ordering canonical versions like ``semver.Compare`` (build metadata ignored)."""
    m = _CANONICAL.match(version)
    if m is None:
        raise ValueError(f"not a canonical semantic version: {version!r}")
    pre = m.group(4)
    idents: tuple[tuple[int, int, str], ...] = ()
    if pre:
        # Numeric identifiers sort before alphanumeric ones; a shorter prefix sorts first.
        idents = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), 0 if pre else 1, idents)


def _package_name(path: str) -> str:
    elems = path.split("/")
    last = elems[-1]
    if len(elems) > 1 and re.fullmatch(r"v[0-9]+", last):
        last = elems[-2]
    name = re.sub(r"[^a-z0-9_]", "_", last.lower()).strip("_") or "pkg"
    if name[0].isdigit():
        name = "p" + name
    if name in _GO_KEYWORDS:
        name += "pkg"
    return name


# -- hashes ------------------------------------------------------------------------------
def _hash1(entries: Iterable[tuple[str, bytes]]) -> str:
    """dirhash.Hash1 over (name, content) pairs."""
    lines = []
    for name, data in sorted(entries, key=lambda e: e[0].encode()):
        if "\n" in name:
            raise ValueError("dirhash: filenames with newlines are not supported")
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    summary = hashlib.sha256("".join(lines).encode()).digest()
    return "h1:" + base64.b64encode(summary).decode()


def h1_zip(zip_bytes: bytes, prefix: str = "") -> str:
    """``h1:`` hash of a module zip, as ``dirhash.HashZip(zip, dirhash.Hash1)``.

    Names are the zip entry names as stored (``PATH@VERSION/...``). A non-empty ``prefix``
    (e.g. ``"example.com/m@v1.0.0/"``) is only checked: every entry must start with it.
    """
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
        entries = [(info.filename, zf.read(info)) for info in zf.infolist()]
    if prefix:
        bad = [name for name, _ in entries if not name.startswith(prefix)]
        if bad:
            raise ValueError(f"zip entries without prefix {prefix!r}: {bad[:5]}")
    return _hash1(entries)


def h1_mod(mod_bytes: bytes) -> str:
    """``h1:`` hash of a go.mod file (the ``/go.mod`` line of go.sum)."""
    return _hash1([("go.mod", mod_bytes)])


# -- modules -----------------------------------------------------------------------------
@dataclass
class Module:
    """One version of a synthetic module.

    ``files`` maps module-relative paths to contents. When None, the zip holds ``go.mod`` and
    ``module.go`` (package named after the last path element, with a ``Version`` constant so
    each version hashes differently). ``go.mod`` is always added from ``go_mod``/the default
    unless ``files`` has its own. ``pad`` adds ``padding.bin`` with that many deterministic
    pseudo-random (incompressible) bytes.

    Version rules (as ``module.Check``): major >= 2 needs a ``/vN`` path suffix, unless the
    version is ``+incompatible``, which needs major >= 2 and no suffix. An ``+incompatible``
    module by default has no go.mod in its zip and its ``.mod`` is the synthesized
    ``module PATH\\n`` that real proxies serve for such versions.
    """

    path: str
    version: str
    files: dict[str, bytes] | None = None
    time: str = "2024-01-01T00:00:00Z"
    go_mod: bytes | None = None
    pad: int = 0

    def __post_init__(self) -> None:
        m = _CANONICAL.match(self.version)
        if m is None:
            raise ValueError(f"{self.path}: version {self.version!r} is not canonical semver")
        major = int(m.group(1))
        suffix = _MAJOR_SUFFIX.search(self.path)
        if self.incompatible:
            if major < 2 or suffix:
                raise ValueError(f"{self.path}@{self.version}: bad +incompatible version")
            declared = self._declared_path()
            if declared is not None and _MAJOR_SUFFIX.search(declared):
                raise ValueError(f"{self.path}@{self.version}: go.mod declares {declared}")
        elif major >= 2 and (suffix is None or int(suffix.group(1)) != major):
            raise ValueError(f"{self.path}@{self.version}: path must end in /v{major}")
        elif major < 2 and suffix is not None and int(suffix.group(1)) >= 2:
            raise ValueError(f"{self.path}@{self.version}: /vN path needs a vN version")

    def _declared_path(self) -> str | None:
        data = self.go_mod if self.go_mod is not None else (self.files or {}).get("go.mod")
        if data is None:
            return None
        m = re.search(rb"^\s*module\s+\"?([^\s\"]+)", data, re.MULTILINE)
        return m.group(1).decode() if m else None

    @property
    def incompatible(self) -> bool:
        """Whether the version carries ``+incompatible``."""
        return self.version.endswith("+incompatible")

    @property
    def pseudo(self) -> bool:
        """Whether the version is a pseudo-version (left out of ``@v/list``)."""
        return is_pseudo_version(self.version)

    @property
    def prefix(self) -> str:
        """Zip entry prefix ``PATH@VERSION/``."""
        return f"{self.path}@{self.version}/"

    def url_path(self, ext: str) -> str:
        """Proxy URL path of ``info``/``mod``/``zip``: ``/ESCAPED_PATH/@v/ESCAPED_VERSION.ext``."""
        return f"/{escape(self.path)}/@v/{escape(self.version)}.{ext}"

    def mod_bytes(self) -> bytes:
        """Content of ``@v/VERSION.mod``."""
        if self.go_mod is not None:
            return self.go_mod
        if self.files is not None and "go.mod" in self.files:
            return self.files["go.mod"]
        if self.incompatible:
            return f"module {self.path}\n".encode()
        return f"module {self.path}\n\ngo 1.18\n".encode()

    def zip_files(self) -> dict[str, bytes]:
        """Module-relative file names and contents that go into the zip."""
        out: dict[str, bytes] = {}
        if not self.incompatible or self.go_mod is not None:
            out["go.mod"] = self.mod_bytes()
        if self.files is None:
            pkg = _package_name(self.path)
            out["module.go"] = (
                f"// Package {pkg} is a synthetic test module.\npackage {pkg}\n\n"
                f'// Version is the module version.\nconst Version = "{self.version}"\n'
            ).encode()
        else:
            out.update(self.files)
        if self.pad:
            rng = random.Random(f"{self.path}@{self.version}")
            out["padding.bin"] = rng.randbytes(self.pad)
        return out

    def zip_bytes(self) -> bytes:
        """A valid, deterministic module zip (entries sorted, fixed timestamps, deflate)."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in sorted(self.zip_files().items()):
                info = zipfile.ZipInfo(self.prefix + name, date_time=_ZIP_DATE)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3
                info.external_attr = 0o644 << 16
                zf.writestr(info, data, compresslevel=6)
        return buf.getvalue()

    def info_bytes(self) -> bytes:
        """Content of ``@v/VERSION.info``."""
        return json.dumps({"Version": self.version, "Time": self.time}).encode() + b"\n"

    def h1(self) -> str:
        """``h1:`` hash of the zip (the first go.sum line)."""
        return h1_zip(self.zip_bytes(), self.prefix)

    def h1_mod(self) -> str:
        """``h1:`` hash of the go.mod (the ``/go.mod`` go.sum line)."""
        return h1_mod(self.mod_bytes())

    def sum_lines(self) -> str:
        """The two go.sum lines (also what the checksum database records)."""
        return (
            f"{self.path} {self.version} {self.h1()}\n"
            f"{self.path} {self.version}/go.mod {self.h1_mod()}\n"
        )


def write_tree(root: Path, modules: list[Module]) -> None:
    """Write ``modules`` into the GOPROXY tree at ``root`` (created if needed).

    Per version: ``ESC_PATH/@v/ESC_VERSION.{info,mod,zip}``. Per module path, recomputed from
    every ``.info`` present (so repeated calls add versions): ``@v/list`` (non-pseudo versions,
    semver order) and ``@latest`` (the ``.info`` of the highest release, else the highest
    pre-release, else the highest pseudo-version).
    """
    root = Path(root)
    touched: set[Path] = set()
    for mod in modules:
        vdir = root / escape(mod.path) / "@v"
        vdir.mkdir(parents=True, exist_ok=True)
        base = escape(mod.version)
        for ext, data in (
            ("mod", mod.mod_bytes()),
            ("zip", mod.zip_bytes()),
            ("info", mod.info_bytes()),
        ):
            _atomic_write(vdir / f"{base}.{ext}", data)
        touched.add(vdir)
    for vdir in touched:
        versions = sorted(
            (unescape(p.name[: -len(".info")]) for p in vdir.glob("*.info")), key=semver_key
        )
        listed = [v for v in versions if not is_pseudo_version(v)]
        _atomic_write(vdir / "list", "".join(v + "\n" for v in listed).encode())
        releases = [v for v in listed if "-" not in v.split("+")[0]]
        latest = (releases or listed or versions)[-1]
        _atomic_write(vdir.parent / "@latest", (vdir / f"{escape(latest)}.info").read_bytes())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -- static server -----------------------------------------------------------------------
_NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{
    worker_connections 512;
}}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 30s;
    server_tokens off;
    default_type application/octet-stream;
    types {{
        application/json info;
        text/plain mod;
        application/zip zip;
    }}
    server {{
        listen 127.0.0.1:{port};
        server_name _;
        root "{root}";
        location / {{
            # Files only: directories and anything missing are a plain 404.
            try_files $uri =404;
        }}
    }}
}}
"""


class StaticServer(Service):
    """Serve a folder read-only on 127.0.0.1 (nginx when installed, else Python's http.server).

    Missing files and directories answer 404. ``!``, ``@`` and ``+`` in paths are served
    literally (percent-encoded forms are decoded first). ``use_nginx=False`` forces the Python
    fallback, as ``tls`` (certificate and key files: https) does. The port survives
    ``stop()``/``start()``.
    """

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        use_nginx: bool | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.port = port if port is not None else free_port()
        self.tls = tls
        if tls is not None:
            use_nginx = False
        self.use_nginx = shutil.which("nginx") is not None if use_nginx is None else use_nginx
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https`` with ``tls``; no trailing slash)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is up."""
        if self._proc is not None:
            return self._proc.poll() is None
        return self._httpd is not None

    def start(self) -> StaticServer:
        """Start serving (no-op if running) and wait until the port answers."""
        if self.running:
            return self
        if self.use_nginx:
            self._start_nginx()
        else:
            self._start_python()
        return self

    def _start_nginx(self) -> None:
        if any(c in str(self.root) for c in '"$\\;{}'):
            raise ValueError(f"unsupported characters for nginx in root path {self.root}")
        self._workdir = Path(tempfile.mkdtemp(prefix="entrepot-nginx-"))
        user = ""
        if os.geteuid() == 0:  # workers would otherwise run as nobody and hit 0700 tmp dirs
            import grp
            import pwd

            user = (
                f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
            )
        conf = self._workdir / "nginx.conf"
        conf.write_text(
            _NGINX_CONF.format(prefix=self._workdir, user=user, port=self.port, root=self.root)
        )
        log = self._workdir / "error.log"
        self._proc = subprocess.Popen(
            ["nginx", "-p", str(self._workdir), "-c", str(conf), "-e", str(log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15.0
        while True:
            if self._proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                self._cleanup()
                raise RuntimeError(f"nginx exited with {self._proc.returncode}:\n{tail}")
            with contextlib.suppress(TimeoutError):
                wait_http(f"{self.url}/", timeout=0.5)
                return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"nginx on port {self.port} did not answer")

    def _start_python(self) -> None:
        root = self.root

        class Handler(_StaticHandler):
            serve_root = root

        self._httpd = _QuietServer(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"static-{self.port}", daemon=True
        )
        self._thread.start()
        if self.tls is None:  # (a listening socket from the start: nothing to wait for)
            wait_http(f"{self.url}/")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # nginx: fast shutdown
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        self._cleanup()

    def _cleanup(self) -> None:
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def access_log(self) -> list[str]:
        """Request lines nginx logged so far (empty for the Python fallback)."""
        if self._workdir is None:
            return []
        path = self._workdir / "access.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


class _StaticHandler(BaseHTTPRequestHandler):
    serve_root: Path
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _resolve(self) -> Path | None:
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        target = (self.serve_root / rel).resolve()
        if not target.is_relative_to(self.serve_root) or not target.is_file():
            return None
        return target

    def _head(self, target: Path | None) -> None:
        if target is None:
            body = b"404 page not found\n"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(target.stat().st_size))
        self.end_headers()

    def do_HEAD(self) -> None:
        self._head(self._resolve())

    def do_GET(self) -> None:
        target = self._resolve()
        self._head(target)
        if target is not None:
            with target.open("rb") as fh, contextlib.suppress(OSError):
                shutil.copyfileobj(fh, self.wfile, _CHUNK)
