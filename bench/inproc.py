"""A/B of what the mirror's own code costs a Go request, in process: no server, no client.

The WSGI application (config.wsgi) is called directly, as gunicorn's worker would, on warm
`.info`, `.mod` and `.zip` files and on cold modules (each file a fill from nginx serving a
static GOPROXY tree), and the CPU time of the calls is measured. On this shared 2-CPU machine
a server under wrk moves with the host (the system CPU of one warm request measured 80-570 us
across one afternoon); this leaves gunicorn, the client and the network out. Still, rounds
differ: warm figures by 10-30 %, cold ones (upstream reads, SQLite writes, fsync) by up to 50 %
in a noisy hour, so compare medians of several rounds. Each build runs in child processes of
its own, the builds alternate, and each round's cold modules were never asked for before.

    .venv/bin/python -m bench.inproc --a /tmp/old --b . [--rounds 4] [--warm 2000]

Prints, per build, the median over rounds of: user+system CPU per warm request of each kind,
and per cold module (its `.mod`, `.info` and `.zip`, in that order, as the go command asks).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from tests.mirror_server import MirrorServer
from tests.support.gomodules import Module, StaticServer, write_tree

from .gomod import GO_ENV, PAD, _write_config

EXTENSIONS = ("mod", "info", "zip")


def _modules(prefix: str, count: int) -> list[Module]:
    return [
        Module(f"example.com/inproc/{prefix}/m{i:03d}", "v1.0.0", pad=PAD) for i in range(count)
    ]


# The child, run in the build's own tree (`python -c`, so that an older build needs no copy of
# this file): the CPU microseconds of its WSGI application per warm request of each kind and
# per cold module, as JSON on its last line.
CHILD = """
import io, json, os, sys, time
spec = json.loads(sys.argv[1])
os.environ.update(spec["env"])
from config.wsgi import application

def get(path):
    status = []
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1", "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr,
    }
    body = application(environ, lambda s, h, e=None: status.append(s))
    b"".join(body)
    body.close()
    if not status[0].startswith("200"):
        raise RuntimeError(path + ": " + status[0])

out = {}
for kind, path in spec["warm"].items():
    for _ in range(200):  # filled by the first, warm after
        get(path)
    started = time.process_time()
    for _ in range(spec["requests"]):
        get(path)
    out["warm " + kind] = (time.process_time() - started) * 1e6 / spec["requests"]
started = time.process_time()
for module in spec["cold"]:
    for path in module:
        get(path)
out["cold module"] = (time.process_time() - started) * 1e6 / len(spec["cold"])
print(json.dumps(out))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--a", type=Path, required=True, help="code root of build A")
    parser.add_argument("--b", type=Path, default=Path("."), help="code root of build B")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--warm", type=int, default=2000, help="warm requests of each kind")
    parser.add_argument("--modules", type=int, default=100, help="cold modules a round")
    args = parser.parse_args()
    builds = {"A": args.a.resolve(), "B": args.b.resolve()}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in builds}
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inproc-")))
        rounds = range(args.rounds)
        cold = {(r, name): f"r{r}{name}" for r in rounds for name in builds}
        warm = _modules("warm", 1)[0]
        tree = [warm, *(m for prefix in cold.values() for m in _modules(prefix, args.modules))]
        write_tree(root / "tree", tree)
        nginx = StaticServer(root / "tree")
        stack.callback(nginx.stop)
        nginx.start()
        for r in rounds:
            for name in list(builds) if r % 2 == 0 else list(builds)[::-1]:
                data = root / f"data-{name}-{r}"
                data.mkdir()
                mirror = MirrorServer(
                    data, _write_config(data / "mirror.yml", nginx.url), root=builds[name], **GO_ENV
                )
                mirror.setup()
                (data / "metrics").mkdir()  # counters in files, as under gunicorn
                env = {k: v for k, v in mirror.env.items() if k.startswith(("MIRROR", "DJANGO"))}
                spec = {
                    "env": {**env, "PROMETHEUS_MULTIPROC_DIR": str(data / "metrics")},
                    "warm": {ext: warm.url_path(ext) for ext in EXTENSIONS},
                    "requests": args.warm,
                    "cold": [
                        [m.url_path(ext) for ext in EXTENSIONS]
                        for m in _modules(cold[(r, name)], args.modules)
                    ],
                }
                done = subprocess.run(
                    [sys.executable, "-c", CHILD, json.dumps(spec)],
                    cwd=builds[name],
                    env={**os.environ, "PYTHONPATH": str(builds[name])},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                results[name].append(figures)
                shown = ", ".join(f"{k} {v:.0f} us" for k, v in figures.items())
                print(f"round {r + 1}: {name} {shown}", flush=True)
    for name, rows in results.items():
        medians = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
        shown = ", ".join(f"{k} {v:.0f} us" for k, v in medians.items())
        print(f"{name} ({builds[name]}) medians: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
