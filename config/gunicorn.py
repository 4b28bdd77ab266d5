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

from config.cpus import usable_cpus

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
errorlog = "-"
# gunicorn's control socket lives at one fixed path per user; several instances on one host
# (tests, benchmarks) would fight over it, and nothing here uses it.
control_socket_disable = True


def on_starting(server: object) -> None:
    """Refuse to serve a misconfigured mirror: Django's system checks (gunicorn runs none
    itself; `make run` also meets them in `migrate`). In a child process, so that the master
    does not load Django (+50 MiB resident) before forking the workers."""
    manage = Path(__file__).resolve().parent.parent / "manage.py"
    result = subprocess.run([sys.executable, str(manage), "check"], check=False)
    if result.returncode:
        raise SystemExit(f"system checks failed (exit {result.returncode}): not serving")
