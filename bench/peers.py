"""The processes under test: upstream, counting proxy, mirror, distribution, nginx."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from tests.mirror_server import MirrorServer
from tests.support.faultproxy import FaultProxy
from tests.support.images import Layout, build_layout, push
from tests.support.net import free_port, wait_http
from tests.support.process import Service, terminate
from tests.support.registry import Registry

_PROBLEM = re.compile(
    r"WARNING|ERROR|CRITICAL|Traceback|Exception|WORKER TIMEOUT|level=(warning|error|fatal|panic)"
)
# Django "2025-01-01 10:00:00,123 ", gunicorn "[2025-01-01 10:00:00 +0000] [123] ", Go "time=..."
_STAMP = re.compile(r'^(\d{4}-\d\d-\d\d [\d:,.]+ |\[[^]]+\] \[\d+\] |time="[^"]*" )')

TOOLS = ("wrk", "skopeo", "nginx", "docker-registry", "go")

# Production defaults (config/gunicorn.py, config/settings.py), over MirrorServer's test ones.
MIRROR_ENV = {
    "WEB_CONCURRENCY": "2",
    "GUNICORN_THREADS": "64",
    "MIRROR_FILL_LEASE_SECONDS": "30",
    "MIRROR_STATS_FLUSH_SECONDS": "5",
    "MIRROR_UPSTREAM_CACHE_SECONDS": "5",
    "GUNICORN_ACCESS_LOG": "",
    "DEBUG": "false",
    "LOG_LEVEL": "INFO",
}

_NGINX_CONF = """\
daemon off;
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


def check_tools() -> None:
    """Exit with a clear message when a command the benchmark drives is missing."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"bench: missing commands: {', '.join(missing)} "
            "(Debian packages wrk, skopeo, nginx-light, docker-registry, golang-go; "
            "`make test-debs`)"
        )


class Nginx(Service):
    """nginx serving the files of `root` with sendfile, everything else inside `prefix`."""

    def __init__(self, prefix: Path, root: Path) -> None:
        self.prefix, self.root = prefix, root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        self.prefix.mkdir(parents=True, exist_ok=True)
        # As root, workers would drop to `nobody`, who cannot enter our 0700 temp folders.
        user = "user root;" if os.geteuid() == 0 else ""
        conf = self.prefix / "nginx.conf"
        conf.write_text(
            _NGINX_CONF.format(prefix=self.prefix, user=user, port=self.port, root=self.root)
        )
        log = (self.prefix / "stderr.log").open("ab")
        self.proc = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", f"{self.prefix}/", "-e", f"{self.prefix}/error.log"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            wait_http(self.url + "/", timeout=10)
        except TimeoutError:
            self.stop()
            log_text = (self.prefix / "error.log").read_text(errors="replace")
            raise RuntimeError(f"nginx did not start: {log_text}") from None
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        terminate(proc)


@dataclass
class Peers:
    """Everything running for one benchmark run."""

    root: Path
    upstream: Registry
    proxy: FaultProxy
    mirror: MirrorServer
    dist: Registry
    _seed: int = 0

    @property
    def mirror_pid(self) -> int:
        assert self.mirror.proc is not None
        return self.mirror.proc.pid

    @property
    def dist_pid(self) -> int:
        proc = self.dist._proc
        assert proc is not None
        return proc.pid

    def urls(self) -> dict[str, str]:
        """Base URL of each compared peer."""
        return {"mirror": self.mirror.url, "distribution": self.dist.url}

    def seed(self, name: str, layer_sizes: list[int], *, keep: bool = False) -> Layout:
        """Build a fresh image (new seed: new blobs) and push it upstream as NAME:latest."""
        self._seed += 1
        path = self.root / "layouts" / f"{name.replace('/', '-')}-{self._seed}"
        layout = build_layout(path, layer_sizes=layer_sizes, seed=self._seed)
        push(layout, f"{self.upstream.host}/{name}:latest", timeout=900)
        if not keep:  # the upstream has it now; spare the disk
            shutil.rmtree(path, ignore_errors=True)
        return layout


def _write_mirror_config(path: Path, upstream_url: str) -> Path:
    path.write_text(
        f"""upstreams:
  - name: hub
    kind: oci
    url: {upstream_url}
    prefix: docker.io
    default: true
"""
    )
    return path


def start_peers(root: Path, stack: ExitStack) -> Peers:
    """Start upstream, proxy, mirror and distribution; `stack` stops them all."""
    upstream = Registry(workdir=root / "upstream")
    stack.callback(upstream.close)
    upstream.start()
    proxy = FaultProxy(upstream.url)
    stack.callback(proxy.stop)
    proxy.start()
    data = root / "mirror"
    data.mkdir()
    config = _write_mirror_config(data / "mirror.yml", proxy.url)
    mirror = MirrorServer(data, config, **MIRROR_ENV)
    stack.callback(mirror.stop)
    mirror.setup()
    mirror.start()
    dist = Registry(workdir=root / "distribution", proxy_remote=proxy.url)
    stack.callback(dist.close)
    dist.start()
    return Peers(root, upstream, proxy, mirror, dist)


def start_nginx(root: Path, files: Path, stack: ExitStack) -> Nginx:
    """nginx serving `files`; stopped by `stack`."""
    nginx = Nginx(root / "nginx", files)
    stack.callback(nginx.stop)
    return nginx.start()


def log_problems(path: Path, limit: int = 12) -> tuple[int, list[str]]:
    """(count, first distinct messages) of warnings, errors and tracebacks in a server log."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 0, []
    lines = [x for x in text.splitlines() if _PROBLEM.search(x)]
    distinct: list[str] = []
    for line in lines:
        message = _STAMP.sub("", line)  # so that repeats of one message collapse
        if message not in distinct:
            distinct.append(message)
    return len(lines), distinct[:limit]
