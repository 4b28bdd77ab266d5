"""A real Celery worker process (optionally with beat) beside a MirrorServer, sharing its
environment: the same data folder, database and broker (REDIS_URL)."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
REDIS = ("127.0.0.1", 6379)


def redis_url() -> str:
    """A Redis database of its own for this test process (emptied; given back at exit), so
    that test runs side by side never take each other's tasks."""
    import redis

    host, port = REDIS
    registry = redis.Redis(host=host, port=port, db=0)
    for n in range(1, 16):
        claim = f"entrepot-tests:db:{n}"
        if registry.set(claim, os.getpid(), nx=True, ex=4 * 3600):
            redis.Redis(host=host, port=port, db=n).flushdb()
            atexit.register(registry.delete, claim)
            return f"redis://{host}:{port}/{n}"
    raise RuntimeError("no free Redis database (1-15) for the tests")


class CeleryWorker:
    def __init__(self, env: dict[str, str], log: Path, *, beat: bool = False) -> None:
        self.env = env
        self.log = log
        self.beat = beat
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> CeleryWorker:
        args = [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO"]
        args += ["--concurrency", "2", "--without-gossip", "--without-mingle"]
        if self.beat:
            args += ["--beat", "--schedule", str(self.log.with_suffix(".beat"))]
        start = self.log.stat().st_size if self.log.exists() else 0
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited:\n{self.log.read_text()[-3000:]}")
            with open(self.log, "rb") as f:
                f.seek(start)
                if b" ready." in f.read():
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"celery worker not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> CeleryWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
