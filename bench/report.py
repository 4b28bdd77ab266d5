"""The results table (terminal and Markdown) and bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass
class Row:
    """One line of the table; `met` is None for figures without a target."""

    measure: str
    mirror: str
    distribution: str
    reference: str
    ratio: str
    target: str
    met: bool | None

    def cells(self) -> list[str]:
        met = "-" if self.met is None else ("**yes**" if self.met else "**NO**")
        return [
            self.measure,
            self.mirror,
            self.distribution,
            self.reference,
            self.ratio,
            self.target,
            met,
        ]


HEADER = ["Measure", "Mirror", "Distribution", "Reference", "Ratio", "Target", "Met"]


def markdown_table(rows: list[Row]) -> str:
    """A Markdown table padded to line up in a terminal too."""
    table = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(HEADER), rule, *(line(r) for r in table[1:])])


def _output(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0] if text else "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    return "?"


def environment() -> list[str]:
    """Bullet lines describing when and where the run happened."""
    return [
        f"Date: {_output(['date', '-u'])}",
        f"Machine: {os.cpu_count()} CPUs (`nproc` {_output(['nproc'])}), {_cpu_model()}, "
        f"{_mem_total()} RAM, Linux {platform.release()}",
        "Command: `make bench` (runs `.venv/bin/python -m bench.run` from the repository root)",
        f"Software: Python {sys.version.split()[0]}, {_output(['docker-registry', '--version'])}"
        f", {_output(['nginx', '-v'])}, {_output(['wrk', '--version'])[:22]}, "
        f"{_output(['skopeo', '--version'])}, {_output(['go', 'version'])}",
    ]


def write_results(
    rows: list[Row], sections: list[tuple[str, list[str]]], duration: float, load: str
) -> Path:
    """(Re)write bench/RESULTS.md: environment, figures explained, table, targets, notes."""
    met = [r for r in rows if r.met is not None]
    lines = [
        "# Entrepot benchmark results",
        "",
        "Written by `make bench` (`bench/run.py`); rerun it to refresh this file.",
        "",
        *(f"- {x}" for x in environment()),
        f"- Run time: {duration / 60:.1f} min; {load}",
        "",
        "## Results",
        "",
        markdown_table(rows),
        "",
        f"Targets met: {sum(bool(r.met) for r in met)} of {len(met)}.",
        "",
        *(f"- {r.measure}: {'met' if r.met else 'NOT met'} ({r.target})" for r in met),
        "",
    ]
    for title, body in sections:
        lines += [f"## {title}", "", *body, ""]
    RESULTS.write_text("\n".join(lines).rstrip() + "\n")
    return RESULTS


def write_section(title: str, rows: list[Row], body: list[str], duration: float, load: str) -> Path:
    """Replace (or add) one section of bench/RESULTS.md, leaving the others as they are: a
    run of one step alone (BENCH_ONLY) records its figures without dropping the full run's."""
    heading = f"## {title}"
    met = [r for r in rows if r.met is not None]
    section = [
        heading,
        "",
        *(f"- {x}" for x in environment()),
        f"- Run time: {duration / 60:.1f} min; {load}",
        "",
        markdown_table(rows),
        "",
        f"Targets met: {sum(bool(r.met) for r in met)} of {len(met)}.",
        "",
        *body,
        "",
    ]
    old = RESULTS.read_text().splitlines() if RESULTS.exists() else ["# Entrepot benchmark results"]
    start = old.index(heading) if heading in old else len(old)
    end = next((i for i in range(start + 1, len(old)) if old[i].startswith("## ")), len(old))
    lines = old[:start] + ([""] if start == len(old) else []) + section + old[end:]
    RESULTS.write_text("\n".join(lines).rstrip() + "\n")
    return RESULTS
