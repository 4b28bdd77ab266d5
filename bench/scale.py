"""The scale step of `make bench`: does a warm hit cost the same with 1M cached objects as
with 1k? (issue 9, "cost growth": at most 1.2x.)

Per database engine (SQLite in a data folder, PostgreSQL in databases of our own that are
dropped at the end), two mirror instances run side by side on one engine: one whose index holds
the small size of cached objects (1k), one with the big size (1M, `BENCH_SCALE_OBJECTS`). The
rows (stored objects, repositories, links, manifests, tags, Go versions) are written in bulk
by a child process (`python -m bench.scale load N`: executemany in one transaction on SQLite,
COPY on PostgreSQL), with the few real objects the measured hits read (a blob in storage, a
manifest and its tag, a Go module's `.info`). The upstream is a closed port and the tag TTL a
year: a warm hit that contacted it would fail, and wrk counts that as an error.

Measured on one instance and then the other, in rounds whose order alternates (on a 2-CPU
machine two servers and two wrk processes at once would share the CPUs, and the tail would be
the wait for one): latency with one connection of a blob GET, a manifest by tag, a Go `.info`,
and a `/v2/_catalog?n=100` page (the first one, and one 90 % into the list via `last=`, or as
deep as still leaves a full page: both sizes answer 100 names); and, alternating, the time of
`manage.py sweep_fills`'s work in process. Latency p50/p99 are those of all the requests of all
rounds taken together (wrk's percentile grid of each round, pooled), the sweep the median over
rounds; the ratio big/small is the cost growth. A 2-second round's own p99 is a few dozen
requests, and moves 2-3x from round to round with the host's pauses (nginx serving a 16 KiB
file here: p50 0.07-0.09 ms, p99 0.16-0.43 ms), hence many short rounds, pooled.

Knobs: BENCH_SCALE_OBJECTS (1000000), BENCH_SCALE_ROUNDS (8), BENCH_SCALE_SECONDS (wrk seconds
per measure, instance and round, 2), BENCH_SCALE_DATABASES (`sqlite,postgresql`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from tests.mirror_server import ROOT, MirrorServer

from .client import OCI_ACCEPT, fetch
from .measure import say
from .peers import MIRROR_ENV
from .report import Row
from .wrk import WrkResult, pooled_percentile, run_wrk

SMALL = 1000
MIN_REPOSITORIES = 250  # so that a catalog page of 100 is full at the small size too
TARGET = 1.2
PAGE = 100
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DATABASE = "entrepot_bench_scale"
YEAR = 365 * 24 * 3600

HIT_REPOSITORY = "library/hit"  # clients call it `hit` (the default upstream is Docker Hub's)
HIT_MODULE, HIT_VERSION = "example.com/hit", "v1.0.0"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TAG_COLUMNS = (
    "repository",
    "name",
    "accept_key",
    "digest",
    "media_type",
    "size",
    "fetched_at",
    "pull_count",
)

ENGINES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


# ---------------------------------------------------------------------------------------------
# What is written: the same plan for every size, in proportion.


@dataclass(frozen=True)
class Plan:
    """Rows for `objects` cached objects: 80 % blobs, 20 % Go files (a version's .zip in
    storage, its .info and .mod as documents); a manifest and a tag per ten objects; a
    repository per hundred."""

    objects: int

    @property
    def blobs(self) -> int:
        return self.objects * 8 // 10

    @property
    def versions(self) -> int:
        return (self.objects - self.blobs) // 3

    @property
    def manifests(self) -> int:
        return self.objects // 10

    @property
    def repositories(self) -> int:
        return max(MIN_REPOSITORIES, self.objects // 100)


def repository_name(index: int) -> str:
    """Half under `library/` (shown without it in the catalog), half in organisations."""
    if index % 2 == 0:
        return f"library/scale{index:07d}"
    return f"org{index % 50:02d}/scale{index:07d}"


def client_names(plan: Plan) -> list[str]:
    """The catalog as clients see it (sorted), the real hit repository included."""
    names = [repository_name(i).removeprefix("library/") for i in range(plan.repositories)]
    return sorted([*names, HIT_REPOSITORY.removeprefix("library/")])


def _hex(kind: str, index: int) -> str:
    return hashlib.sha256(f"{kind}{index}".encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# The child process: Django set up on the instance's database.


def _insert(model: type, columns: list[str], rows: Iterable[tuple]) -> int:
    """Bulk-insert `rows` (values in `columns` order): COPY on PostgreSQL, executemany in
    batches elsewhere. The caller holds the transaction."""
    from django.db import connection

    meta = model._meta  # type: ignore[attr-defined]
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    names = ", ".join(quote(meta.get_field(c).column) for c in columns)
    count = 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    count += 1
            return count
        marks = ", ".join(["%s"] * len(columns))
        sql = f"INSERT INTO {table} ({names}) VALUES ({marks})"
        iterator = iter(rows)
        while batch := list(islice(iterator, 50_000)):
            cursor.executemany(sql, batch)
            count += len(batch)
    return count


def _repositories(upstream_id: int, stamp: object, plan: Plan) -> dict[int, int]:
    """Insert the plan's repositories; index -> row id."""
    from registries.models import Repository

    _insert(
        Repository,
        ["upstream", "name", "created", "pull_count"],
        ((upstream_id, repository_name(i), stamp, 0) for i in range(plan.repositories)),
    )
    ids = dict(Repository.objects.filter(name__contains="scale").values_list("name", "id"))
    return {i: ids[repository_name(i)] for i in range(plan.repositories)}


def _stored_rows(oci: int, go: int, stamp: object, plan: Plan) -> Iterator[tuple]:
    for i in range(plan.blobs):
        digest = _hex("blob", i)
        yield (f"blobs/sha256/{digest[:2]}/{digest}", 1000 + i % 5000, oci, stamp, 0)
    for v in range(plan.versions):
        key = f"go/{_module(v)}/@v/{_version(v)}.zip"
        yield (key, 200 + v % 100, go, stamp, 0)


def _module(v: int) -> str:
    return f"example.com/scale/m{v // 50:06d}"


def _version(v: int) -> str:
    return f"v1.0.{v % 50}"


def _document_rows(stamp: object, plan: Plan) -> Iterator[tuple]:
    """A version's .info and .mod, kept as documents (goproxy/service.small_file)."""
    for v in range(plan.versions):
        for namespace in ("go-info", "go-mod"):
            yield (namespace, f"{_module(v)}@{_version(v)}", 200, b"{}", stamp)


def _link_rows(repos: dict[int, int], stamp: object, plan: Plan) -> Iterator[tuple]:
    count = len(repos)
    for i in range(plan.blobs):
        yield (repos[i % count], f"sha256:{_hex('blob', i)}", "blob", stamp)
    for j in range(plan.manifests):
        yield (repos[j % count], f"sha256:{_hex('manifest', j)}", "manifest", stamp)


def _tag_row(repository_id: int, j: int, stamp: object) -> tuple:
    digest = f"sha256:{_hex('manifest', j)}"
    return (repository_id, f"t{j}", "*", digest, OCI_MANIFEST, 2, stamp, 0)


def load_rows(objects: int) -> dict[str, int]:
    """Write the plan's rows for `objects` into the empty index; rows written per table."""
    from django.db import connection, transaction
    from django.utils import timezone

    from goproxy.models import ModuleVersion
    from mirror.models import CachedDocument, StoredObject, Upstream
    from registries.models import Link, Manifest, Tag

    plan = Plan(objects)
    oci = Upstream.objects.get(kind="oci").id
    go = Upstream.objects.get(kind="go").id
    stamp = connection.ops.adapt_datetimefield_value(timezone.now())
    if connection.vendor == "sqlite":  # random keys into big indexes: keep their pages
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA cache_size = -1000000")
    with transaction.atomic():
        repos = _repositories(oci, stamp, plan)
        written = {"repositories": len(repos)}
        written["stored objects"] = _insert(
            StoredObject,
            ["key", "size", "upstream", "created", "access_count"],
            _stored_rows(oci, go, stamp, plan),
        )
        written["links"] = _insert(
            Link, ["repository", "digest", "kind", "created"], _link_rows(repos, stamp, plan)
        )
        written["manifests"] = _insert(
            Manifest,
            ["digest", "media_type", "size", "body", "created", "pull_count"],
            (
                (f"sha256:{_hex('manifest', j)}", OCI_MANIFEST, 2, b"{}", stamp, 0)
                for j in range(plan.manifests)
            ),
        )
        written["tags"] = _insert(
            Tag,
            list(TAG_COLUMNS),
            (_tag_row(repos[j % len(repos)], j, stamp) for j in range(plan.manifests)),
        )
        written["Go .info/.mod documents"] = _insert(
            CachedDocument,
            ["namespace", "key", "status", "body", "fetched_at"],
            _document_rows(stamp, plan),
        )
        written["Go versions"] = _insert(
            ModuleVersion,
            ["module", "version", "zip_size", "created", "download_count"],
            ((_module(v), _version(v), 300, stamp, 0) for v in range(plan.versions)),
        )
    if connection.vendor == "postgresql":
        # What autovacuum does soon after a bulk load: since PostgreSQL 13 inserts alone get a
        # table vacuumed, whose visibility map spares index-only scans their heap visits
        # (101 of them for a `_catalog` page of the 1M index, 0.69 ms -> 0.53 ms).
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    return written


def _store(key: str, data: bytes, upstream_id: int) -> None:
    from mirror.models import StoredObject
    from mirror.storage import get_storage

    writer = get_storage().writer(key)
    writer.write(data)
    writer.commit()
    StoredObject.objects.create(key=key, size=len(data), upstream_id=upstream_id)


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {
        "mediaType": media_type,
        "digest": f"sha256:{hashlib.sha256(data).hexdigest()}",
        "size": len(data),
    }


def load_hits() -> dict[str, str]:
    """The real objects the measured hits read; their paths."""
    from django.utils import timezone

    from goproxy import keys
    from mirror.models import Upstream
    from registries.formats import accept_key
    from registries.models import Link, Manifest, Repository, Tag

    oci = Upstream.objects.get(kind="oci")
    go = Upstream.objects.get(kind="go")
    layer = random.Random(9).randbytes(16 * 1024)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()
    blobs = [
        _descriptor("application/vnd.oci.image.config.v1+json", config),
        _descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer),
    ]
    for descriptor, data in zip(blobs, (config, layer), strict=True):
        _store(f"blobs/sha256/{descriptor['digest'][7:9]}/{descriptor['digest'][7:]}", data, oci.id)
    body = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": blobs[0], "layers": blobs[1:]}
    ).encode()
    manifest = Manifest.objects.create(
        digest=_descriptor(OCI_MANIFEST, body)["digest"],
        media_type=OCI_MANIFEST,
        size=len(body),
        body=body,
    )
    repo = Repository.objects.create(upstream=oci, name=HIT_REPOSITORY)
    Link.objects.bulk_create(
        [Link(repository=repo, digest=d["digest"], kind="blob") for d in blobs]
        + [Link(repository=repo, digest=manifest.digest, kind="manifest")]
    )
    accept = [part.strip() for part in OCI_ACCEPT["Accept"].split(",")]
    Tag.objects.create(
        repository=repo,
        name="latest",
        accept_key=accept_key(accept),
        digest=manifest.digest,
        media_type=OCI_MANIFEST,
        size=len(body),
        fetched_at=timezone.now(),
    )
    info = json.dumps({"Version": HIT_VERSION, "Time": "2026-01-01T00:00:00Z"}).encode()
    _store(keys.file_key("", HIT_MODULE, HIT_VERSION, "info"), info, go.id)
    name = HIT_REPOSITORY.removeprefix("library/")
    return {
        "blob": f"/v2/{name}/blobs/{blobs[1]['digest']}",
        "manifest": f"/v2/{name}/manifests/latest",
        "info": f"/{HIT_MODULE}/@v/{HIT_VERSION}.info",
    }


def time_sweeps(rounds: int) -> list[float]:
    """Seconds of `manage.py sweep_fills`'s work, each round with 20 expired leases and 2
    live ones to find (leases are fills in progress: their number does not grow with the
    cache, but the sweep must not scan what does)."""
    import datetime as dt
    import io

    from django.core.management import call_command
    from django.utils import timezone

    from mirror.models import FillLease

    times = []
    for r in range(rounds):
        now = timezone.now()
        FillLease.objects.all().delete()
        FillLease.objects.bulk_create(
            [
                FillLease(
                    key=f"sweep/{r}/{i}",
                    owner="bench",
                    expires_at=now + dt.timedelta(seconds=-60 if i < 20 else 60),
                )
                for i in range(22)
            ]
        )
        started = time.perf_counter()
        call_command("sweep_fills", stdout=io.StringIO())
        times.append(time.perf_counter() - started)
    return times


def _child(argv: list[str]) -> None:
    import django

    django.setup()
    command = argv[0]
    if command == "load":
        started = time.monotonic()
        written = load_rows(int(argv[1]))
        paths = load_hits()
        result = {"written": written, "paths": paths, "seconds": time.monotonic() - started}
    elif command == "sweep":
        result = {"seconds": time_sweeps(int(argv[1]))}
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# The parent: instances, databases and measures.


@dataclass
class Instance:
    """A mirror instance of one size on one engine."""

    label: str  # "1k" or "1M"
    objects: int
    server: MirrorServer
    paths: dict[str, str] = field(default_factory=dict)
    load_seconds: float = 0.0
    written: dict[str, int] = field(default_factory=dict)
    wrk: dict[str, list[WrkResult]] = field(default_factory=dict)
    sweeps: list[float] = field(default_factory=list)

    def child(self, *args: str) -> dict:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.scale", *args],
            cwd=ROOT,
            env=self.server.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode:
            raise RuntimeError(f"bench.scale {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.splitlines()[-1])


def _label(objects: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1000)):
        if objects >= size and objects % size == 0:
            return f"{objects // size}{unit}"
    return str(objects)


def _config(path: Path) -> Path:
    path.write_text(
        f"""upstreams:
  - {{name: hub, kind: oci, url: "http://127.0.0.1:9", prefix: docker.io, default: true,
     tag_ttl: {YEAR}, stale_max_age: {YEAR}}}
  - {{name: proxy, kind: go, url: "http://127.0.0.1:9", verify_sums: false, tag_ttl: {YEAR}}}
"""
    )
    return path


def _pg(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


def _database_env(engine: str, name: str, stack: ExitStack) -> dict[str, str]:
    """DATABASE_URL of a fresh PostgreSQL database, dropped by `stack`; none for SQLite."""
    if engine == "sqlite":
        return {}
    _pg(f"DROP DATABASE IF EXISTS {name}")
    _pg(f"CREATE DATABASE {name}")
    stack.callback(_pg, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}"}


def _instance(root: Path, engine: str, objects: int, stack: ExitStack) -> Instance:
    label = _label(objects)
    data = root / f"scale-{engine}-{label}"
    data.mkdir(parents=True)
    db = _database_env(engine, f"{PG_DATABASE}_{label.lower()}", stack)
    server = MirrorServer(data, _config(data / "mirror.yml"), **MIRROR_ENV, **db)
    stack.callback(server.stop)
    server.manage("migrate", "--noinput")
    server.manage("load_mirror_config")
    inst = Instance(label, objects, server)
    loaded = inst.child("load", str(objects))
    inst.paths, inst.written, inst.load_seconds = (
        loaded["paths"],
        loaded["written"],
        loaded["seconds"],
    )
    rows = sum(inst.written.values())
    rate = rows / max(inst.load_seconds, 1e-3)
    say(f"    {label}: {rows:,} rows in {inst.load_seconds:.1f}s ({rate:,.0f}/s)")
    return inst


def _urls(inst: Instance) -> dict[str, tuple[str, dict[str, str], int]]:
    """Measure -> (URL, headers, wrk connections): one, so that latency is the request's
    own, not time queued behind the others of wrk."""
    names = client_names(Plan(inst.objects))
    # A full page at both sizes: 90 % into the small list leaves only 25 names.
    deep = names[min(len(names) * 9 // 10, len(names) - PAGE - 1)]
    base = inst.server.url
    return {
        "blob": (base + inst.paths["blob"], {}, 1),
        "manifest": (base + inst.paths["manifest"], OCI_ACCEPT, 1),
        "info": (base + inst.paths["info"], {}, 1),
        "catalog": (f"{base}/v2/_catalog?n={PAGE}", {}, 1),
        "catalog deep": (f"{base}/v2/_catalog?n={PAGE}&last={deep}", {}, 1),
    }


def _check(inst: Instance) -> None:
    """Every measured URL answers 200, the hits from the cache (a second GET: the `.info`
    is written to storage as earlier releases kept it, and moves on its first read)."""
    for measure, (url, headers, _) in _urls(inst).items():
        fetch(url, headers=headers)
        d = fetch(url, headers=headers)
        if d.status != 200:
            raise RuntimeError(f"scale {inst.label}: GET {url}: {d.status}")
        if measure.startswith("catalog"):
            continue
        if d.headers.get("x-cache") != "HIT":
            raise RuntimeError(f"scale {inst.label}: GET {url} not a HIT: {d.headers}")


def _wrk(inst: Instance, measure: str, seconds: int) -> WrkResult:
    url, headers, connections = _urls(inst)[measure]
    result = run_wrk(url, connections=connections, threads=1, duration=seconds, headers=headers)
    if result.error_count:
        raise RuntimeError(f"scale {inst.label} {measure}: {result.describe()}")
    return result


def _measure_round(pair: list[Instance], seconds: int, first: int) -> None:
    """Each measure on one instance and then the other, `pair[first]` first (callers alternate
    it round by round). One at a time: with both at once, two servers and two wrk processes
    share two CPUs, and the p99 becomes the wait for a CPU rather than the cost of the hit."""
    order = pair[first:] + pair[:first]
    for measure in MEASURES:
        for inst in order:
            inst.wrk.setdefault(measure, []).append(_wrk(inst, measure, seconds))


@dataclass
class EngineFigures:
    engine: str
    small: Instance
    big: Instance


def _settle(engine: str) -> None:
    """Write out what loading the rows left dirty in memory (hundreds of MiB at 1M; on
    PostgreSQL, a checkpoint first), so that its writeback cannot land on the rounds. In a run
    without this, one 2-second round of one instance had a p99 of 55 ms: writeback is a likely
    cause, not a proven one; like the other steps, the scale step starts from a clean slate."""
    if engine == "postgresql":
        _pg("CHECKPOINT")
    os.sync()


def measure_engine(root: Path, engine: str, big: int, rounds: int, seconds: int) -> EngineFigures:
    """Both sizes on one engine: load, start, check, measure in alternating rounds, stop."""
    with ExitStack() as stack:
        say(f"  {ENGINES[engine]}: writing rows")
        small_inst = _instance(root, engine, SMALL, stack)
        big_inst = _instance(root, engine, big, stack)
        pair = [small_inst, big_inst]
        _settle(engine)
        for _ in range(rounds):  # alternating, like the rest
            for inst in pair:
                inst.sweeps += inst.child("sweep", "5")["seconds"]
        for inst in pair:
            inst.server.start()
            _check(inst)
        for r in range(rounds):
            _measure_round(pair, seconds, r % 2)
        say(f"  {ENGINES[engine]}: measured; stopping")
    return EngineFigures(engine, small_inst, big_inst)


def scale(root: Path) -> list[EngineFigures]:
    """The scale step on each engine named in BENCH_SCALE_DATABASES."""
    big = _env_int("BENCH_SCALE_OBJECTS", 1_000_000)
    rounds = _env_int("BENCH_SCALE_ROUNDS", 8)
    seconds = _env_int("BENCH_SCALE_SECONDS", 2)
    engines = (os.environ.get("BENCH_SCALE_DATABASES") or "sqlite,postgresql").split(",")
    return [measure_engine(root, e.strip(), big, rounds, seconds) for e in engines if e.strip()]


# ---------------------------------------------------------------------------------------------
# Figures for the table.

MEASURES = {
    "blob": "warm blob GET (16 KiB), ms p50/p99 (wrk, 1 conn)",
    "manifest": "warm manifest by tag, ms p50/p99 (wrk, 1 conn)",
    "info": "warm Go .info, ms p50/p99 (wrk, 1 conn)",
    "catalog": f"_catalog?n={PAGE} first page, ms p50/p99 (1 conn)",
    "catalog deep": f"_catalog?n={PAGE}&last= 90 % in, ms p50/p99 (1 conn)",
}


def _median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def _latency(inst: Instance, measure: str) -> tuple[float, float]:
    runs = inst.wrk[measure]
    return pooled_percentile(runs, 50), pooled_percentile(runs, 99)


def _row(
    measure: str, small: tuple[float, ...], big: tuple[float, ...], labels: tuple[str, str]
) -> Row:
    ratios = [b / s if s else float("inf") for s, b in zip(small, big, strict=True)]

    def show(values: tuple[float, ...]) -> str:
        return "/".join(f"{v:.2f}" if v < 10 else f"{v:.1f}" for v in values)

    return Row(
        measure=measure,
        mirror=f"{labels[0]} {show(small)}; {labels[1]} {show(big)}",
        distribution="-",
        reference="-",
        ratio=" / ".join(f"{r:.2f}" for r in ratios) + f" {labels[1]}/{labels[0]}",
        target=f"<= {TARGET} {labels[1]}/{labels[0]}",
        met=all(r <= TARGET for r in ratios),
    )


def rows(figures: list[EngineFigures], number: int = 8) -> list[Row]:
    """One row per measure and engine."""
    out = []
    for f in figures:
        labels = (f.small.label, f.big.label)
        db = ENGINES[f.engine]
        for letter, (measure, title) in zip("abcde", MEASURES.items(), strict=False):
            out.append(
                _row(
                    f"{number}{letter}. {db}: {title}",
                    _latency(f.small, measure),
                    _latency(f.big, measure),
                    labels,
                )
            )
        out.append(
            _row(
                f"{number}f. {db}: sweep_fills, ms (median of 5 x rounds)",
                (_median(f.small.sweeps) * 1000,),
                (_median(f.big.sweeps) * 1000,),
                labels,
            )
        )
    return out


def explanations(figures: list[EngineFigures], number: int = 8) -> list[str]:
    """What the scale rows measure, with the rows written."""
    what = (__doc__ or "").split("\n\n", 2)[1:]
    lines = [f"{number}. Scale (cost growth): " + " ".join(" ".join(what).split())]
    for f in figures:
        for inst in (f.small, f.big):
            written = ", ".join(f"{k} {v:,}" for k, v in inst.written.items())
            lines.append(
                f"   - {ENGINES[f.engine]} {inst.label}: {written} "
                f"(written in {inst.load_seconds:.1f}s)"
            )
    return lines


def details(figures: list[EngineFigures]) -> list[str]:
    """Every wrk run of the scale step."""
    lines = []
    for f in figures:
        for inst in (f.small, f.big):
            sweeps = ", ".join(f"{s * 1000:.1f}" for s in inst.sweeps)
            lines.append(f"- {ENGINES[f.engine]} {inst.label}: sweep_fills ms {sweeps}")
            for measure, runs in inst.wrk.items():
                each = "; ".join(
                    f"p50 {r.p50_ms:.2f} p99 {r.p99_ms:.2f} ({r.rps:.0f}/s)" for r in runs
                )
                lines.append(f"    - {measure}: {each}")
    return lines


if __name__ == "__main__":
    _child(sys.argv[1:])
