"""`manage.py prewarm REF... [--module M@V ...] [--platform os/arch ...]`: warm images and Go
modules from the command line, with a progress bar.

References are written as clients pull them. A positional argument is a module when what
follows its last "@" is a version ("@v1.2.3") or "@latest"; anything else (including
"name@sha256:...") is an image. `--module` names a module explicitly (also one without a
version, meaning @latest).

By default the job's items run in this process, one after the other, through the same
`mirror.prewarm.run_item` a worker uses (waits for a slot, the upstream's budget or a retry are
honoured), so it works with no worker running. `--queue` hands the items to the Celery workers
and follows them; `--no-wait` hands them over and exits. The exit status is 0 only when the job
succeeded (with `--no-wait`: when it was accepted).
"""

from __future__ import annotations

import re
import shutil
import sys
import threading
import time
from typing import TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.template.defaultfilters import filesizeformat
from django.utils.text import Truncator

from mirror import prewarm
from mirror.models import PrewarmItem, PrewarmJob

MODULE_VERSION = re.compile(r"@(?:latest|v\d[^@/]*)$")
POLL = 0.5  # seconds between progress redraws
ENDED_JOB = {
    PrewarmJob.Status.SUCCEEDED,
    PrewarmJob.Status.PARTIAL,
    PrewarmJob.Status.FAILED,
    PrewarmJob.Status.CANCELLED,
}
MARKS = {"succeeded": "ok", "failed": "FAILED", "cancelled": "cancelled"}


def specs_from(refs: list[str], modules: list[str], platforms: list[str]) -> list[prewarm.ItemSpec]:
    """Item specs of the command line's references (see the module docstring)."""
    specs = []
    for ref in refs:
        kind = "module" if MODULE_VERSION.search(ref) else "image"
        specs.append(prewarm.ItemSpec(kind, ref, tuple(platforms) if kind == "image" else ()))
    specs += [prewarm.ItemSpec("module", m) for m in modules]
    return specs


def bar(percent: int, width: int) -> str:
    filled = width * percent // 100
    return "[" + "#" * filled + "." * (width - filled) + "]"


def percent_of(done: int, total: int, ended: bool) -> int:
    if ended:
        return 100
    return min(99, done * 100 // total) if total else 0


class ProgressDisplay:
    """Draws the job on a stream: on a terminal one line redrawn in place (the total, then the
    running item), a permanent line per item as it ends; elsewhere only the permanent lines."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.reported: set[int] = set()

    def draw(self, job: PrewarmJob) -> None:
        items = list(job.items.order_by("pk"))
        self._clear()
        for item in items:
            if item.status in prewarm.ENDED and item.pk not in self.reported:
                self.reported.add(item.pk)
                self.stream.write(self._ended_line(item) + "\n")
        if self.tty and job.status not in ENDED_JOB:
            self.stream.write(self._live_line(items))
        self.stream.flush()

    def _clear(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")

    @staticmethod
    def _ended_line(item: PrewarmItem) -> str:
        size = filesizeformat(item.bytes_done).replace("\xa0", " ")
        line = f"{MARKS.get(item.status, item.status):>9}  {item.kind} {item.reference} ({size})"
        return f"{line}: {item.error}" if item.error and item.status != "succeeded" else line

    def _live_line(self, items: list[PrewarmItem]) -> str:
        done = sum(i.bytes_done for i in items)
        total = sum(i.bytes_total for i in items)
        ended = sum(i.status in prewarm.ENDED for i in items)
        size = f"{filesizeformat(done)}/{filesizeformat(total)}".replace("\xa0", " ")
        line = f"{bar(percent_of(done, total, False), 20)} {percent_of(done, total, False):3d}% "
        line += f"{size} items {ended}/{len(items)}"
        running = [i for i in items if i.status == PrewarmItem.Status.RUNNING]
        if running:
            item = running[0]
            pct = percent_of(item.bytes_done, item.bytes_total, False)
            line += f" | {item.reference} {bar(pct, 10)} {pct}%"
        width = shutil.get_terminal_size((100, 20)).columns - 1
        return Truncator(line).chars(width)


class Ticker:
    """Redraws a job's progress every POLL seconds from a thread of its own (an inline item
    holds the main thread for as long as it runs)."""

    def __init__(self, job_id: int, display: ProgressDisplay) -> None:
        self.job_id = job_id
        self.display = display
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="prewarm-progress", daemon=True)

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        try:
            while True:
                self.display.draw(PrewarmJob.objects.get(pk=self.job_id))
                if self._stop.wait(POLL):
                    return
        finally:
            connection.close()  # this thread's own connection


class Command(BaseCommand):
    help = (
        "Warm images and Go modules: prewarm alpine:3.19 ghcr.io/org/tool:v1 "
        "golang.org/x/mod@v0.14.0 --platform linux/amd64. A reference ending in @vX... or "
        "@latest is a module; --module names one explicitly. Runs here by default (no worker "
        "needed); --queue hands the job to the workers and follows it; --no-wait just queues it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("refs", nargs="*", metavar="REF", help="image or module@version")
        parser.add_argument(
            "--module", action="append", default=[], metavar="M[@V]", help="a Go module"
        )
        parser.add_argument(
            "--platform",
            action="append",
            default=[],
            metavar="OS/ARCH",
            help="image platform to warm (repeatable; default: all of an index)",
        )
        parser.add_argument(
            "--refresh", action="store_true", help="revalidate tags and @latest now"
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument(
            "--inline",
            dest="mode",
            action="store_const",
            const="inline",
            help="run the items in this process (default)",
        )
        mode.add_argument(
            "--queue",
            dest="mode",
            action="store_const",
            const="queue",
            help="hand the items to the Celery workers and follow their progress",
        )
        mode.add_argument(
            "--no-wait",
            dest="mode",
            action="store_const",
            const="no-wait",
            help="hand the items to the workers and exit",
        )
        parser.set_defaults(mode="inline")

    def handle(self, *args: object, **options: object) -> None:
        specs = specs_from(options["refs"], options["module"], options["platform"])
        if not specs:
            raise CommandError("name at least one image or module")
        mode = options["mode"]
        try:
            job = prewarm.create_job(
                specs,
                source=PrewarmJob.Source.CLI,
                requested_by="manage.py prewarm",
                platforms=options["platform"],
                refresh=options["refresh"],
                enqueue=mode != "inline",
            )
        except prewarm.JobInvalid as e:
            problems = [p for messages in e.errors.values() for p in messages]
            raise CommandError("cannot warm:\n  " + "\n  ".join(problems)) from None
        self.stderr.write(f"{job} with {len(specs)} item(s)", style_func=str)
        if mode == "no-wait":
            self.stdout.write(str(job.pk))
            return
        display = ProgressDisplay(sys.stderr)
        try:
            with Ticker(job.pk, display):
                if mode == "inline":
                    self._run_inline(job)
                else:
                    self._follow(job)
        except KeyboardInterrupt:
            self._cancel(job)
            self.stderr.write("\ninterrupted: job cancelled", style_func=str)
            sys.exit(130)
        job.refresh_from_db()
        display.draw(job)
        self._summary(job)

    @staticmethod
    def _run_inline(job: PrewarmJob) -> None:
        """Run every item here; an item that must wait (slot, budget, retry) is tried again
        when its wait is over, the others meanwhile."""
        due = {pk: 0.0 for pk in job.items.values_list("pk", flat=True)}
        while due:
            now = time.monotonic()
            ready = [pk for pk, at in due.items() if at <= now]
            if not ready:
                time.sleep(min(POLL, min(due.values()) - now))
                continue
            pk = ready[0]
            wait = prewarm.run_item(pk)
            if wait is not None:
                due[pk] = time.monotonic() + wait
            elif PrewarmItem.objects.filter(pk=pk, status__in=prewarm.ENDED).exists():
                del due[pk]
            else:  # another runner holds it (a worker took it over): look again soon
                due[pk] = time.monotonic() + prewarm.SLOT_POLL

    @staticmethod
    def _follow(job: PrewarmJob) -> None:
        while job.status not in ENDED_JOB:
            time.sleep(POLL)
            job.refresh_from_db()

    @staticmethod
    def _cancel(job: PrewarmJob) -> None:
        """Cancel the job; items this process was running end as cancelled too."""
        prewarm.cancel(job)
        for pk in job.items.exclude(status__in=prewarm.ENDED).values_list("pk", flat=True):
            prewarm.run_item(pk)

    def _summary(self, job: PrewarmJob) -> None:
        items = list(job.items.all())
        counts = {s: sum(i.status == s for i in items) for s in ("succeeded", "failed")}
        size = filesizeformat(sum(i.bytes_done for i in items)).replace("\xa0", " ")
        elapsed = (job.finished - job.created).total_seconds() if job.finished else 0.0
        self.stdout.write(
            f"{job}: {counts['succeeded']}/{len(items)} items succeeded, {size}, {elapsed:.1f} s"
        )
        if job.status != PrewarmJob.Status.SUCCEEDED:
            raise CommandError(f"job {job.pk} {job.status}", returncode=1)
