"""`make run` with no REDIS_URL: the web server and a Celery worker (with beat) on the embedded
filesystem broker run a prewarm job to `succeeded`, and Ctrl-C (SIGINT to the process group,
as a terminal sends it) stops every process `make run` started. Also `manage.py prewarm`:
with `--queue` through that worker, and inline (the default) with no worker at all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Upstreams
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
START = 180  # seconds for `make run` to migrate, collect static files and serve
JOB = 60  # seconds for a small job to succeed


def _processes_with(data_dir: Path) -> list[str]:
    """Live processes whose environment names this data folder: what `make run` started."""
    mark = f"MIRROR_DATA_DIR={data_dir}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if mark not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state != "Z":
            found.append(f"{proc.name} {cmdline}")
    return found


@pytest.fixture
def env(tmp_path: Path, upstreams: Upstreams) -> dict[str, str]:
    config = tmp_path / "mirror.yml"
    config.write_text(
        "upstreams:\n"
        f"  - {{name: hub, kind: oci, url: '{upstreams.hub.url}', prefix: docker.io,"
        " default: true}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MAKEFLAGS")}
    env.update(
        PORT=str(free_port()),
        HOST="127.0.0.1",
        MIRROR_DATA_DIR=str(tmp_path / "var"),
        MIRROR_CONFIG=str(config),
        WEB_CONCURRENCY="2",
        CELERY_CONCURRENCY="2",
    )
    return env


@pytest.fixture
def make_run(env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = tmp_path / "make-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["make", "run"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{env['PORT']}"
    deadline = time.monotonic() + START
    while not _ready(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"make run did not get ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    try:
        yield proc
    finally:
        _stop(proc)
        print(log.read_text()[-2000:])


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_make_run_prewarms_with_no_redis_and_stops_whole(
    env: dict[str, str], upstreams: Upstreams, make_run: subprocess.Popen[bytes]
) -> None:
    data_dir = Path(env["MIRROR_DATA_DIR"])
    assert any("celery" in p and "worker" in p for p in _processes_with(data_dir))
    upstreams.seed("library/embedded:1")
    upstreams.seed("library/embedded:2")
    created = _manage(env, "mirror_token", "create", "ci", "--scope", "prewarm")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{env['PORT']}/api/v1",
        headers={"Authorization": f"Bearer {token}"},
    )

    answer = api.post("/prewarm/", json={"images": ["embedded:1"]})
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["id"]
    deadline = time.monotonic() + JOB
    while (job := api.get(f"/prewarm/{job_id}/").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    assert job["status"] == "succeeded", job
    # The worker took it from the filesystem broker under the data folder.
    assert (data_dir / "broker" / "queue").is_dir()

    queued = _manage(env, "prewarm", "--queue", "embedded:2")
    assert queued.returncode == 0, queued.stderr
    assert "1/1 items succeeded" in queued.stdout
    assert "ok  image" in queued.stderr

    _stop(make_run)
    assert make_run.returncode is not None
    deadline = time.monotonic() + 20
    while left := _processes_with(data_dir):
        assert time.monotonic() < deadline, f"still running after make run stopped: {left}"
        time.sleep(0.2)

    # With no worker at all, the command runs the job itself; a job with a failed item exits 1.
    upstreams.seed("library/embedded:3")
    inline = _manage(env, "prewarm", "embedded:3", "embedded:nosuchtag")
    assert inline.returncode == 1, inline.stderr
    assert "ok  image" in inline.stderr and "FAILED  image" in inline.stderr
    assert "1/2 items succeeded" in inline.stdout
    assert "partial" in inline.stderr
