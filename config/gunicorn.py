"""gunicorn settings for `make run`.

Worker model: gthread. Every streaming client holds one thread for as long as its download
lasts, so slow clients pulling large blobs each block only their own thread; warm blobs leave
through sendfile (gunicorn uses it for `wsgi.file_wrapper` responses), so a thread costs little
CPU while it waits on a slow socket. Processes x threads bounds concurrent downloads; raise
`GUNICORN_THREADS` for more.

Measured with `python -m bench.worker_model` (2026-11-23, 2 cores, 2 processes): while 16
clients read a 64 MiB blob at 1 MiB/s, 20 warm manifest requests took 21 ms median with
gthread; with sync workers all 20 timed out (10 s), the two processes being held by the slow
downloads.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from config.cpus import usable_cpus

ROOT = Path(__file__).resolve().parent.parent
# Prometheus metrics: each worker process counts into files in this folder, which /metrics
# merges (prometheus_client's multiprocess mode; mirror/metrics.py). Set here, in the master,
# so that every worker has it before it imports prometheus_client; one folder per server, on
# a local disk (an emptyDir in Kubernetes). Default: MIRROR_DATA_DIR (as config/settings.py
# reads it) / metrics.
_data_dir = Path(os.environ.get("MIRROR_DATA_DIR") or ROOT / "var").resolve()
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_data_dir / "metrics"))

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
# gthread that reads request heads in its poller, under MIRROR_REQUEST_HEAD_TIMEOUT: slow
# clients cannot hold threads (config/worker.py). bench/worker_model.py sets other classes.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "config.worker.HeadFirstWorker")
# The CPUs this process may use (affinity and cgroup quota), not the host's.
workers = int(os.environ.get("WEB_CONCURRENCY", max(2, usable_cpus())))
threads = int(os.environ.get("GUNICORN_THREADS", "64"))
# Idle keep-alive connections are cheap with gthread (they wait in the poller, not a thread).
keepalive = 30
timeout = 60
graceful_timeout = 30
worker_connections = 2000
# sendfile is on by default. Do not write `sendfile = True` here: gunicorn's setting is the
# --no-sendfile flag, and any value of it turns sendfile off.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
# Never the query string (%(r)s, %(q)s: tokens travel there), the user (%(u)s, from Basic
# auth) or the referer. MIRROR_ACCESS_LOG has the same in JSON, with the request id.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms %({x-request-id}o)s'
errorlog = "-"
if os.environ.get("LOG_FORMAT", "json").strip().lower() != "plain":
    logger_class = "config.jsonlog.GunicornLogger"  # its own lines in JSON, as the app's
# gunicorn's control socket lives at one fixed path per user; several instances on one host
# (tests, benchmarks) would fight over it, and nothing here uses it.
control_socket_disable = True


def on_starting(server: object) -> None:
    """Refuse to serve a misconfigured mirror: Django's system checks (gunicorn runs none
    itself; `make run` also meets them in `migrate`). In a child process, so that the master
    does not load Django (+50 MiB resident) before forking the workers."""
    result = subprocess.run([sys.executable, str(ROOT / "manage.py"), "check"], check=False)
    if result.returncode:
        raise SystemExit(f"system checks failed (exit {result.returncode}): not serving")
    # The counts of an earlier run (and of the check above) are not this server's.
    metrics = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    metrics.mkdir(parents=True, exist_ok=True)
    for stale in metrics.glob("*.db"):
        stale.unlink(missing_ok=True)


def child_exit(server: object, worker: Any) -> None:
    """A worker's live gauges (fills in progress) go with it; its counters stay counted."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


# glibc's mallopt() parameter number for the most malloc arenas a process creates.
_M_ARENA_MAX = -8


def post_fork(server: object, worker: Any) -> None:
    """Cap the worker's malloc arenas at MALLOC_ARENA_MAX (default 2). glibc gives threads up
    to 8 x CPUs arenas, each keeping freed chunk memory of its own: with many request threads
    reading 1 MiB chunks, a worker's RSS grew by ~90 MiB in the three-instance benchmark
    (bench/multi.py), for no speed. The environment variable itself only acts at exec, and
    workers are forked, hence the call."""
    import contextlib
    import ctypes

    arenas = int(os.environ.get("MALLOC_ARENA_MAX") or 2)
    # Not glibc (musl, macOS): that allocator, its own ways.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, arenas)


def post_worker_init(worker: Any) -> None:
    """Load the URLconf and the views of the protocols and the admin now (Django imports them
    at the first request otherwise), then move all that into the collector's permanent
    generation (gc.freeze): a full collection of a loaded worker's ~135,000 objects takes
    ~60 ms, which every few thousand requests landed on one of them as a p99 spike (bench
    step 8). Frozen objects are never scanned; what requests allocate is collected as before.
    The upstream clients' TLS context is built now too, not by the first request that misses.
    The REST API is left to its first request (config/urls.py): a worker that serves only the
    protocols never holds it."""
    import gc

    from django.urls import get_resolver

    from mirror.http import tls_context

    get_resolver().url_patterns  # noqa: B018 - imported for its side effect
    tls_context()
    gc.collect()
    gc.freeze()
