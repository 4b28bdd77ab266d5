"""A/B of the Go module proxy: `go mod download` through two builds of the mirror, side by side.

`make bench` (bench/gomod.py) measures one build against nginx; to see what a change to the Go
path is worth, both builds (say a `git worktree` of the old commit and this tree) must run in
the same minutes on this noisy 2-CPU machine. Per round, 100 modules never requested before are
downloaded from nginx, then cold and warm through each mirror; the order of the peers rotates
every round. Prints median seconds and ratios to nginx.

    .venv/bin/python -m bench.goab --a /tmp/old --b . [--c OTHER] [--modules 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from tests.mirror_server import MirrorServer
from tests.support.gomodules import Module, StaticServer, write_tree

from .gomod import GO_ENV, PAD, _go_download, _write_config


def _start_build(root: Path, data: Path, upstream: str, stack: ExitStack) -> MirrorServer:
    data.mkdir(parents=True)
    server = MirrorServer(data, _write_config(data / "mirror.yml", upstream), root=root, **GO_ENV)
    stack.callback(server.stop)
    server.setup()
    return server.start()


def _peers(r: int, names: list[str]) -> list[tuple[str, str]]:
    """(peer, phase) in round `r`'s order: blocks of nginx and of each build (cold, then
    warm), rotated by one block every round."""
    blocks = [[("nginx", "")]] + [[(name, "cold"), (name, "warm")] for name in names]
    shift = r % len(blocks)
    return [run for block in blocks[shift:] + blocks[:shift] for run in block]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--a", type=Path, required=True, help="code root of build A")
    parser.add_argument("--b", type=Path, default=Path("."), help="code root of build B")
    parser.add_argument("--c", type=Path, help="code root of a third build, if any")
    parser.add_argument("--modules", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    builds = {"A": args.a.resolve(), "B": args.b.resolve()}
    if args.c is not None:
        builds["C"] = args.c.resolve()
    seconds: dict[str, list[float]] = {}
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="goab-")))
        rounds = [
            [Module(f"example.com/ab/r{r}/m{i:03d}", "v1.0.0", pad=PAD) for i in range(n)]
            for r in range(args.rounds)
            for n in [args.modules]
        ]
        write_tree(root / "tree", [m for mods in rounds for m in mods])
        nginx = StaticServer(root / "tree")
        stack.callback(nginx.stop)
        nginx.start()
        urls = {"nginx": nginx.url}
        for name, code in builds.items():
            urls[name] = _start_build(code, root / f"data-{name}", nginx.url, stack).url
        for r, modules in enumerate(rounds):
            for peer, phase in _peers(r, list(builds)):
                label = f"{peer} {phase}".strip()
                folder = root / f"go-{r}-{label.replace(' ', '-')}"
                took = _go_download(folder, urls[peer], modules)
                seconds.setdefault(label, []).append(took)
                print(f"round {r + 1}: {label:<8} {took:6.2f}s", flush=True)
    nginx_median = statistics.median(seconds["nginx"])
    for label, values in seconds.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"{label:<8} median {median:5.2f}s  {median / nginx_median:5.2f}x nginx  ({runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
