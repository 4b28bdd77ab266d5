"""A mirror that runs prewarm jobs, for end-to-end tests of any ecosystem: the real service
(gunicorn, tests/mirror_server.py) and a real Celery worker (tests/support/worker.py) sharing
a Redis database of their own (`redis_url()`), with an admin API token, and helpers that drive
jobs through the REST API (`/api/v1/prewarm/`) as a CI system would.

Give it the upstream configuration file and any extra environment (e.g. credentials).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.mirror_server import MirrorServer
from tests.support.worker import CeleryWorker, redis_url

ENDED = ("succeeded", "partial", "failed", "cancelled")


class PrewarmEnv:
    """`beat=True` runs Celery beat in the worker (django-celery-beat's schedules, from the
    database: the defaults created by migrate, and any a test adds)."""

    def __init__(self, data_dir: Path, config: Path, *, beat: bool = False, **env: str) -> None:
        self.server = MirrorServer(data_dir, config, REDIS_URL=redis_url(), **env)
        self.worker = CeleryWorker(self.server.env, data_dir / "worker.log", beat=beat)
        self.token = ""

    def start(self) -> PrewarmEnv:
        self.server.setup()
        out = self.server.manage("mirror_token", "create", "prewarm-tests", "--scope", "admin")
        self.token = out.strip().splitlines()[-1]
        self.server.start()
        self.worker.start()
        return self

    def stop(self) -> None:
        self.worker.stop()
        self.server.stop()

    def __enter__(self) -> PrewarmEnv:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- Django, for what the API does not show ------------------------------------------
    def shell(self, code: str) -> str:
        """Run Python in `manage.py shell` against the server's database; its last line."""
        lines = self.server.manage("shell", "-c", code).strip().splitlines()
        return lines[-1] if lines else ""

    # -- the REST API ----------------------------------------------------------------------
    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return httpx.request(
            method, f"{self.server.url}{path}", headers=headers, timeout=30, **kwargs
        )

    def prewarm(
        self,
        images: list[str] | None = None,
        modules: list[str] | None = None,
        platforms: str | list[str] = "all",
    ) -> dict[str, Any]:
        """Start a job (POST /api/v1/prewarm/); the job as answered (201)."""
        body: dict[str, Any] = {"platforms": platforms}
        if images:
            body["images"] = images
        if modules:
            body["modules"] = modules
        response = self.api("POST", "/api/v1/prewarm/", json=body)
        assert response.status_code == 201, response.text[:2000]
        return response.json()

    def job(self, job_id: int) -> dict[str, Any]:
        response = self.api("GET", f"/api/v1/prewarm/{job_id}/")
        assert response.status_code == 200, response.text[:2000]
        return response.json()

    def cancel(self, job_id: int) -> dict[str, Any]:
        response = self.api("POST", f"/api/v1/prewarm/{job_id}/cancel/")
        assert response.status_code == 200, response.text[:2000]
        return response.json()

    def wait_job(
        self,
        job_id: int,
        until: Callable[[dict[str, Any]], bool] = lambda job: job["status"] in ENDED,
        timeout: float = 60,
    ) -> dict[str, Any]:
        """Poll the job until `until(job)` holds (by default: it ended); the job then."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if until(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not there within {timeout} s: {job}")
            time.sleep(0.1)
