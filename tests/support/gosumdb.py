"""A real Go checksum database (golang.org/x/mod/sumdb) on 127.0.0.1 for tests.

``gosumdb/main.go`` is compiled once from Debian's golang-golang-x-mod-dev sources. Each
``SumDB`` generates a fresh signing key and an empty in-memory log; a module version is
recorded (hashed from the static GOPROXY tree) the first time anyone looks it up, and never
changes afterwards, so editing a zip after that makes the go command report a SECURITY ERROR::

    with StaticServer(root) as proxy, SumDB("sum.test", root) as sumdb:
        env = go_env(tmp, proxy.url, sumdb.gosumdb)
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.process import Service, terminate

from .net import free_port, wait_http

__all__ = ["SOURCE", "SumDB", "build_sumdb", "default_cache_dir"]

SOURCE = Path(__file__).resolve().parent / "gosumdb" / "main.go"
GOPATH_X_MOD = "/usr/share/gocode"


def default_cache_dir() -> Path:
    """Per-user folder under the temp dir where the binary and its Go build cache live."""
    return Path(tempfile.gettempdir()) / f"entrepot-gosumdb-{os.getuid()}"


def build_sumdb(cache_dir: Path) -> Path:
    """Compile ``gosumdb/main.go`` to ``cache_dir/gosumdb`` unless an up-to-date binary exists.

    Builds in GOPATH mode against /usr/share/gocode (no network, no go.mod); safe to call
    from parallel workers (the binary is renamed into place).
    """
    cache_dir = Path(cache_dir)
    binary = cache_dir / "gosumdb"
    if binary.exists() and binary.stat().st_mtime > SOURCE.stat().st_mtime:
        return binary
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("the go command is not installed (Debian package golang-go)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cache_dir),
        "GO111MODULE": "off",
        "GOPATH": GOPATH_X_MOD,
        "GOCACHE": str(cache_dir / "gocache"),
        "GOENV": "off",
        "GOFLAGS": "",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
    }
    tmp = cache_dir / f".gosumdb.{os.getpid()}.tmp"
    proc = subprocess.run(
        [go, "build", "-o", str(tmp), SOURCE.name],
        cwd=SOURCE.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"building {SOURCE} failed:\n{proc.stderr}")
    os.replace(tmp, binary)
    return binary


class SumDB(Service):
    """A ``gosumdb`` process serving ``/latest``, ``/lookup/PATH@VERSION`` and ``/tile/...``.

    ``name`` must be ``host[/path]`` (the go command checks it). ``proxy_root`` is the static
    GOPROXY tree whose ``.zip``/``.mod`` files are hashed on first lookup. ``key`` is the
    verifier key ``NAME+HASH+KEYDATA``; ``gosumdb`` is ``"KEY URL"`` for ``$GOSUMDB``. Every
    ``start()`` makes a new key and an empty log (the port is kept).
    """

    def __init__(
        self,
        name: str,
        proxy_root: Path,
        *,
        port: int | None = None,
        cache_dir: Path | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.name = name
        self.proxy_root = Path(proxy_root).resolve()
        self.port = port if port is not None else free_port()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.start_timeout = start_timeout
        self.key = ""
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        atexit.register(self.stop)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def gosumdb(self) -> str:
        """Value for ``$GOSUMDB`` that talks to this server directly: ``"KEY URL"``."""
        if not self.key:
            raise RuntimeError("SumDB is not started")
        return f"{self.key} {self.url}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        """The server's stderr (one line per request) so far."""
        if self._workdir is None or not (self._workdir / "stderr.log").exists():
            return ""
        return (self._workdir / "stderr.log").read_text(errors="replace")

    def start(self) -> SumDB:
        """Build if needed, start on ``self.port``, read the key and wait for ``/latest``."""
        if self.running:
            return self
        binary = build_sumdb(self.cache_dir)
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="entrepot-gosumdb-"))
        stdout_path = self._workdir / "stdout.txt"
        with stdout_path.open("wb") as out, (self._workdir / "stderr.log").open("ab") as err:
            self._proc = subprocess.Popen(
                [
                    str(binary),
                    "-name",
                    self.name,
                    "-addr",
                    f"127.0.0.1:{self.port}",
                    "-proxy",
                    str(self.proxy_root),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            lines = stdout_path.read_text().split("\n")
            if len(lines) >= 3:  # vkey line and URL line both complete
                self.key = lines[0].strip()
                break
            if self._proc.poll() is not None:
                raise RuntimeError(f"gosumdb exited with {self._proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"gosumdb did not print its key:\n{self.log()}")
            time.sleep(0.02)
        status = wait_http(f"{self.url}/latest", timeout=max(0.5, deadline - time.monotonic()))
        if status != 200:
            self.stop()
            raise RuntimeError(f"gosumdb /latest answered {status}:\n{self.log()}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process (kill if it lingers). The log folder stays until ``close()``."""
        proc, self._proc = self._proc, None
        terminate(proc, timeout)

    def close(self) -> None:
        """Stop and remove the log folder."""
        self.stop()
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
