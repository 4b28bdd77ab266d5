"""A focused A/B of the cold large-blob path: mirror vs distribution, alternating, one run.

`make bench` measures the cold 1 GiB GET twice among everything else; tuning the fill path
needs more rounds of just that, optionally with a profile of the mirror's workers, and the
same on S3 storage (moto). Same topology and settings as bench/run.py (bench/peers.py):

    .venv/bin/python -m bench.cold --mib 1024 --rounds 3 [--s3] [--profile OUT.txt]

Prints, per GET: seconds, peak RSS of the largest serving process, CPU seconds used.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from tests.support.net import free_port, wait_http
from tests.support.process import terminate
from tests.support.s3 import bucket_env

from . import peers
from .measure import BigPull, _big_pull, _largest_layer, say

MIB = 1024 * 1024
BUCKET = "entrepot-bench"


def _moto(stack: ExitStack) -> dict[str, str]:
    """A moto S3 server with a bucket, in a process of its own (in this one it would share
    the interpreter lock with the counting proxy and the client); the mirror's environment."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stack.callback(terminate, server)
    wait_http(f"http://127.0.0.1:{port}/", timeout=30)
    return bucket_env(f"http://127.0.0.1:{port}", BUCKET)


def _profiler(master: int, out: Path, seconds: int) -> subprocess.Popen[bytes]:
    """py-spy on the mirror's master and workers (raw folded stacks, native frames off)."""
    py_spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen(
        [
            *(str(py_spy), "record", "--pid", str(master), "--subprocesses", "--format", "raw"),
            *("--rate", "200", "--duration", str(seconds), "--output", str(out), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _line(peer: str, b: BigPull) -> str:
    return (
        f"{peer:<12} {b.seconds:6.2f} s  peak {b.peak_worker / MIB:5.0f} MiB/process "
        f"(before {b.before / MIB:.0f})  cpu {b.cpu:4.1f} s ({b.cpu_sys:.1f} sys)  ok={b.ok}"
    )


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--mib", type=int, default=1024)
    args.add_argument("--rounds", type=int, default=3)
    args.add_argument("--s3", action="store_true", help="mirror on S3 storage (moto)")
    args.add_argument("--profile", type=Path, help="py-spy folded stacks of the first pull")
    args.add_argument("--only", choices=["mirror", "distribution"])
    args.add_argument("--env", action="append", default=[], help="NAME=VALUE for the mirror")
    opts = args.parse_args()
    peers.MIRROR_ENV.update(item.split("=", 1) for item in opts.env)
    root = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    try:
        with ExitStack() as stack:
            if opts.s3:
                peers.MIRROR_ENV.update(_moto(stack))
            p = peers.start_peers(root, stack)
            say(f"seeding {opts.rounds} image(s) of {opts.mib} MiB")
            images = [p.seed(f"bench/cold{r}", [opts.mib * MIB]) for r in range(opts.rounds)]
            urls = p.urls()
            names = [n for n in urls if opts.only in (None, n)]
            results: dict[str, list[float]] = {n: [] for n in names}
            for r, layout in enumerate(images):
                digest = _largest_layer(layout)
                order = names if r % 2 == 0 else names[::-1]
                for peer in order:
                    spy = None
                    if opts.profile and peer == "mirror" and r == 0:
                        spy = _profiler(p.mirror_pid, opts.profile, 60)
                    url = f"{urls[peer]}/v2/bench/cold{r}/blobs/{digest}"
                    b = _big_pull(p, peer, url, digest, layout.blob_sizes[digest])
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(30)
                    results[peer].append(b.seconds)
                    print(_line(peer, b), flush=True)
            for peer, secs in results.items():
                print(f"{peer}: best {min(secs):.2f} s, all {', '.join(f'{s:.2f}' for s in secs)}")
            if len(results) == 2:
                print(
                    f"ratio m/d (best): {min(results['mirror']) / min(results['distribution']):.2f}"
                )
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
