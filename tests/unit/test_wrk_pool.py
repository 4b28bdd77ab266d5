"""The benchmark's pooled percentiles (bench/wrk.py): several wrk runs read as one set of
requests, as the scale step reports them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.wrk import WrkResult, pooled_percentile, run_wrk
from tests.support.gomodules import StaticServer


def _run(requests: int, grid: list[tuple[float, float]]) -> WrkResult:
    return WrkResult(requests, 0, 1.0, {}, 0.0, 0.0, grid)


def test_the_runs_are_read_as_one_set_of_requests() -> None:
    steady = _run(1000, [(50.0, 300.0), (100.0, 800.0)])
    paused = _run(1000, [(50.0, 300.0), (98.0, 400.0), (100.0, 9000.0)])  # its p99: 9 ms
    assert pooled_percentile([steady], 99) == 0.8
    assert pooled_percentile([paused], 99) == 9.0
    # 2000 requests: 1000 at 300 us, 480 at 400, 500 at 800, 20 at 9000: the 1980th is 800.
    assert pooled_percentile([steady, paused], 50) == 0.3
    assert pooled_percentile([steady, paused], 99) == 0.8
    assert pooled_percentile([steady, paused], 100) == 9.0
    # A run's requests count: ten times fewer paused ones, and the 990th of 1100 is at 800.
    assert pooled_percentile([_run(100, paused.grid), steady], 90) == 0.8
    with pytest.raises(ValueError):
        pooled_percentile([], 99)


def test_a_real_run_pooled_alone_gives_wrks_own_percentiles(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x" * 4096)
    with StaticServer(tmp_path) as server:
        result = run_wrk(f"{server.url}/file", connections=1, threads=1, duration=1)
    assert result.requests > 0 and not result.error_count, result.describe()
    assert [at for at, _ in result.grid][:2] == [1.0, 2.0] and result.grid[-1][0] == 100.0
    assert pooled_percentile([result], 50) == result.p50_ms
    assert pooled_percentile([result], 99) == result.p99_ms
