"""Several Entrepot instances and a Celery worker on one PostgreSQL database, one S3 API
server and one Redis: the production shape (many replicas, one cache) on loopback.

The backing services are real: a fresh PostgreSQL database (created for the caller, dropped
after), a `moto_server` process for S3 and a private Redis database (tests/support/worker.py
`redis_url()`: broker and Django's shared cache). A test takes them all at once::

    with backing_services() as backing, Cluster(tmp, config, backing) as cluster:
        a, b, c = cluster.servers
        ...

or passes its own addresses, for instance those of TCP relays (tests/support/tcprelay.py) in
front of PostgreSQL and S3 to cut them mid-test: every address in `Backing` is only what the
instances are given, so a relay URL works as well as the service's own::

    with fresh_database() as db, MotoServer() as s3, TcpRelay("127.0.0.1", s3.port) as relay:
        backing = Backing(db, f"http://127.0.0.1:{relay.port}", redis_url())
        with Cluster(tmp, config, backing) as cluster:
            ...

The bucket is created through `Backing.s3_url` when the Cluster is made. moto keeps its
buckets in memory: stopping the moto server loses them (cut it with a relay instead).

Inspection: `filler_of(key)` names the instance whose process holds a fill's lease (the
lease owner is `host:pid:nonce`, the pid a gunicorn worker of one instance), `objects()` and
`uploads()` list what S3 holds, `rows()` runs a query on the shared database, `worker_pids()`
lists every gunicorn worker (for RSS sampling).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg

from bench.rss import children
from tests.mirror_server import MirrorServer
from tests.support.net import free_port, wait_http
from tests.support.process import Service, terminate
from tests.support.s3 import bucket_env
from tests.support.worker import CeleryWorker, redis_url

__all__ = ["Backing", "Cluster", "MotoServer", "backing_services", "fresh_database"]

PG_ADMIN = os.environ.get("ENTREPOT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BUCKET = "entrepot-cluster"
# PostgreSQL accepts ~100 connections, for every instance and every test run beside this one:
# few threads per worker, few fills, and a connection per request, not per thread.
DEFAULTS = {
    "WEB_CONCURRENCY": "2",
    "GUNICORN_THREADS": "8",
    "MIRROR_MAX_FILLS": "4",
    "DATABASE_CONN_MAX_AGE": "0",
}


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (its URL), dropped at the end."""
    import pytest

    name = f"entrepot_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL is needed at {PG_ADMIN}: {e}", pytrace=False)
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        yield f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


class MotoServer(Service):
    """An S3 API server (`moto_server`, in memory) in a process of its own on 127.0.0.1."""

    def __init__(self, log: Path | None = None) -> None:
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - the child's
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        wait_http(f"{self.url}/moto-api/", timeout=30)
        return self

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None


@dataclass
class Backing:
    """Where the instances find their shared services (the services' own addresses or
    relays in front of them)."""

    database_url: str
    s3_url: str
    redis_url: str


@contextlib.contextmanager
def backing_services(log_dir: Path | None = None) -> Iterator[Backing]:
    """A fresh database, a moto server and a private Redis database."""
    log = log_dir / "moto.log" if log_dir else None
    with fresh_database() as database, MotoServer(log) as s3:
        yield Backing(database, s3.url, redis_url())


class Cluster(Service):
    """`size` MirrorServers (separate gunicorn masters on separate ports, each with its own data
    folder: spools, logs) and, unless `worker=False`, a Celery worker, all on `backing`.

    `env` is added to every process's environment (e.g. MIRROR_FILL_LEASE_SECONDS), over
    DEFAULTS (sized for PostgreSQL's connection limit: override them for a benchmark). The S3
    bucket is created here: the S3 API at `backing.s3_url` must answer already."""

    def __init__(
        self,
        workdir: Path,
        config: Path,
        backing: Backing,
        *,
        size: int = 3,
        worker: bool = True,
        bucket: str = BUCKET,
        **env: str,
    ) -> None:
        self.workdir = workdir
        self.backing = backing
        self.bucket = bucket
        self.env = {
            **DEFAULTS,
            "DATABASE_URL": backing.database_url,
            "REDIS_URL": backing.redis_url,
            **bucket_env(backing.s3_url, bucket),
            **env,
        }
        self.servers = [
            MirrorServer(workdir / f"instance{i}", config, **self.env) for i in range(size)
        ]
        self.worker: CeleryWorker | None = None
        if worker:
            self.worker = CeleryWorker(
                {**self.servers[0].env, "MIRROR_DATA_DIR": str(workdir / "worker")},
                workdir / "worker.log",
            )

    def start(self) -> Cluster:
        """Migrate the shared database once, then start every process at once."""
        (self.workdir / "worker").mkdir(parents=True, exist_ok=True)
        self.servers[0].setup()  # migrations and the upstreams, once for the shared database
        with ThreadPoolExecutor(len(self.servers) + 1) as pool:
            started = [
                pool.submit(_start, server, static=n > 0) for n, server in enumerate(self.servers)
            ]
            if self.worker is not None:
                started.append(pool.submit(self.worker.start))
            for future in started:
                future.result()
        return self

    def stop(self) -> None:
        """Stop every process (at once: each may take its graceful shutdown's time)."""
        stoppers = [server.stop for server in self.servers]
        if self.worker is not None:
            stoppers.append(self.worker.stop)
        with ThreadPoolExecutor(len(stoppers)) as pool:
            for future in [pool.submit(stop) for stop in stoppers]:
                future.result()

    # -- inspection ----------------------------------------------------------------------------
    def worker_pids(self) -> dict[int, str]:
        """{pid: "instanceN/pid"} for every running gunicorn worker of every instance."""
        found = {}
        for n, server in enumerate(self.servers):
            if server.proc is not None and server.proc.poll() is None:
                for pid in children(server.proc.pid):
                    found[pid] = f"instance{n}/{pid}"
        return found

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run `query` on the shared database; its rows."""
        with psycopg.connect(self.backing.database_url, connect_timeout=5) as conn:
            return conn.execute(query, params).fetchall()

    def filler_of(self, key: str, timeout: float = 10) -> MirrorServer:
        """The instance whose worker holds the live lease on `key` (waiting for one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for (owner,) in self.rows(
                "SELECT owner FROM mirror_filllease WHERE key = %s AND expires_at >= now()", key
            ):
                pid = int(owner.split(":")[1])
                for server in self.servers:
                    if server.proc is not None and pid in children(server.proc.pid):
                        return server
            time.sleep(0.05)
        raise AssertionError(f"no instance holds a lease on {key} after {timeout} s")

    @property
    def s3(self) -> Any:
        env = self.env
        return boto3.client(
            "s3",
            endpoint_url=env["AWS_S3_ENDPOINT_URL"],
            region_name=env["AWS_S3_REGION_NAME"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def objects(self) -> list[str]:
        """Keys of the committed S3 objects (the mirror's under MIRROR_S3_PREFIX/objects/)."""
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys

    def uploads(self) -> list[str]:
        """Keys of the multipart uploads begun and neither completed nor aborted."""
        answer = self.s3.list_multipart_uploads(Bucket=self.bucket)
        return [upload["Key"] for upload in answer.get("Uploads", [])]


def _start(server: MirrorServer, *, static: bool) -> None:
    if static:  # static files live in each instance's data folder
        server.data_dir.mkdir(parents=True, exist_ok=True)
        server.manage("collectstatic", "--noinput", "--verbosity", "0")
    server.start()
