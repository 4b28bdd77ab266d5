"""Run a real CNCF distribution registry (Debian's ``docker-registry``) on 127.0.0.1."""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.process import Service, terminate

from .net import free_port, wait_http

__all__ = ["Registry"]

REGISTRY_BIN = "docker-registry"


class Registry(Service):
    """A ``docker-registry serve`` process with its own port, config and storage folder.

    ``htpasswd=(user, password)`` enables Basic auth. ``proxy_remote`` (plus optional
    ``proxy_creds``) turns it into distribution's pull-through cache of that upstream (pushes
    are then refused). Storage and port survive ``stop()``/``start()``; ``close()`` (also
    called on context-manager exit) stops it and removes the temp folder it created.
    """

    def __init__(
        self,
        *,
        htpasswd: tuple[str, str] | None = None,
        proxy_remote: str | None = None,
        proxy_creds: tuple[str, str] | None = None,
        port: int | None = None,
        workdir: Path | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.htpasswd = htpasswd
        self.proxy_remote = proxy_remote
        self.proxy_creds = proxy_creds
        self.port = port if port is not None else free_port()
        self.start_timeout = start_timeout
        self._owns_workdir = workdir is None
        self.workdir = (
            Path(workdir)
            if workdir is not None
            else Path(tempfile.mkdtemp(prefix="entrepot-registry-"))
        )
        self.storage = self.workdir / "storage"
        self.config_path = self.workdir / "config.yml"
        self.log_path = self.workdir / "registry.log"
        self._proc: subprocess.Popen[bytes] | None = None
        atexit.register(self.stop)

    # -- properties -----------------------------------------------------------------------
    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, for image references."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}"

    @property
    def creds(self) -> str | None:
        """``user:password`` for skopeo's ``--dest-creds`` (or None without htpasswd)."""
        return None if self.htpasswd is None else f"{self.htpasswd[0]}:{self.htpasswd[1]}"

    @property
    def running(self) -> bool:
        """Whether the registry process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ------------------------------------------------------------------------
    def _write_config(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        # JSON is valid YAML, which spares us a YAML dependency.
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": self.host,
                # Fixed secret: upload session state stays valid across restarts.
                "secret": "entrepot-test-registry-secret",
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
            "health": {"storagedriver": {"enabled": False}},
        }
        if self.htpasswd is not None:
            user, password = self.htpasswd
            entry = subprocess.run(
                ["htpasswd", "-Bbn", user, password], capture_output=True, check=True, text=True
            ).stdout.strip()
            htpasswd_path = self.workdir / "htpasswd"
            htpasswd_path.write_text(entry + "\n")
            config["auth"] = {"htpasswd": {"realm": "entrepot-test", "path": str(htpasswd_path)}}
        if self.proxy_remote is not None:
            proxy: dict[str, str] = {"remoteurl": self.proxy_remote}
            if self.proxy_creds is not None:
                proxy["username"], proxy["password"] = self.proxy_creds
            config["proxy"] = proxy
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def start(self) -> Registry:
        """Start the registry (no-op if running) and wait until ``/v2/`` answers 200/401."""
        if self.running:
            return self
        self._write_config()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            try:
                status = wait_http(f"{self.url}/v2/", timeout=0.5)
            except TimeoutError:
                status = None
            if status in (200, 401):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"docker-registry on {self.host} not ready (last status {status}):\n"
                    f"{self.log_tail()}"
                )

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process and wait for it (kill if it lingers). Keeps storage."""
        proc, self._proc = self._proc, None
        terminate(proc, timeout)

    def restart(self) -> Registry:
        """Stop then start again (same port and storage)."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and delete the working folder if this object created it."""
        self.stop()
        atexit.unregister(self.stop)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, n: int = 40) -> str:
        """Last ``n`` lines of the registry log (for error messages)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def __repr__(self) -> str:
        mode = f" proxy={self.proxy_remote}" if self.proxy_remote else ""
        auth = " htpasswd" if self.htpasswd else ""
        return f"<Registry {self.url}{mode}{auth} running={self.running}>"
