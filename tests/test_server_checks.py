"""Issue 7, point 7: a system check warns when the persistent database connections of one
instance (processes x (threads + fills + 1)) exceed what PostgreSQL accepts. Run against the
real PostgreSQL of the test machine (max_connections 100 by default)."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from tests.mirror_server import ROOT

PG = os.environ.get("ENTREPOT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="module")
def pg_limit() -> int:
    try:
        with psycopg.connect(PG, connect_timeout=5) as conn:
            limit = int(conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
            reserved = conn.execute("SHOW superuser_reserved_connections").fetchone()
            return limit - int(reserved[0])  # type: ignore[index]
    except psycopg.OperationalError as e:
        pytest.fail(f"PostgreSQL is needed at {PG}: {e}", pytrace=False)


def _check(**env: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--database", "default"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": PG, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout + result.stderr


def test_warns_when_connections_exceed_the_limit(pg_limit: int) -> None:
    # 2 x (64 + 32 + 1) = 194: `make run`'s defaults on two CPUs
    out = _check(WEB_CONCURRENCY="2", GUNICORN_THREADS="64", MIRROR_MAX_FILLS="32")
    assert "mirror.W001" in out
    assert "2 processes x (64 threads + 32 fills + 1) = 194" in out
    assert f"PostgreSQL accepts {pg_limit}" in out


def test_quiet_when_they_fit(pg_limit: int) -> None:
    threads = pg_limit // 2 - 3  # 2 x (threads + 1 + 1) <= limit
    out = _check(WEB_CONCURRENCY="2", GUNICORN_THREADS=str(threads), MIRROR_MAX_FILLS="1")
    assert "mirror.W001" not in out


def test_quiet_without_persistent_connections(pg_limit: int) -> None:
    out = _check(WEB_CONCURRENCY="8", GUNICORN_THREADS="64", DATABASE_CONN_MAX_AGE="0")
    assert "mirror.W001" not in out
