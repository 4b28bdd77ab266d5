"""Runs the real service (gunicorn, as `make run` does) for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.net import free_port

ROOT = Path(__file__).resolve().parent.parent


class MirrorServer:
    """An Entrepot instance with its own data folder (or a shared database and storage), run
    from the code in `root` (this checkout, or another commit's for an A/B)."""

    def __init__(
        self,
        data_dir: Path,
        config: Path | None,
        *,
        root: Path = ROOT,
        app: str = "config.wsgi",
        **env: str,
    ) -> None:
        self.root = root
        self.app = app  # the WSGI application gunicorn runs (bench/static_wsgi.py: a floor)
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {
            **os.environ,
            "MIRROR_DATA_DIR": str(data_dir),
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "WEB_CONCURRENCY": "2",
            "GUNICORN_THREADS": "32",
            "MIRROR_STATS_FLUSH_SECONDS": "0.2",
            "MIRROR_FILL_LEASE_SECONDS": "4",
            "MIRROR_UPSTREAM_CACHE_SECONDS": "0",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            **env,
        }
        if config is not None:
            self.env["MIRROR_CONFIG"] = str(config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def setup(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.manage("migrate", "--noinput")
        self.manage("load_mirror_config")
        self.manage("collectstatic", "--noinput", "--verbosity", "0")

    def start(self) -> MirrorServer:
        self.manage("sweep_fills")
        log = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "config/gunicorn.py", self.app],
            cwd=self.root,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"mirror did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def wait_committed(self, blob_path: str, timeout: float = 10) -> None:
        """Wait until a blob is in the cache (clients get the bytes once they are verified;
        the commit, an fsync and a rename or an S3 completion, follows)."""
        deadline = time.monotonic() + timeout
        while httpx.head(f"{self.url}{blob_path}").headers.get("X-Cache") != "HIT":
            if time.monotonic() > deadline:
                raise AssertionError(f"{blob_path} was not committed within {timeout} s")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the whole server (master and workers), as a crash would."""
        self.stop(signal.SIGKILL)
