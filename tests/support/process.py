"""Shared plumbing of the fixture services: stopping a child process, `with` support."""

from __future__ import annotations

import subprocess
from types import TracebackType
from typing import Any, Self


def terminate(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """Terminate a child process and wait for it, killing it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Service:
    """`with Service(...) as s:` starts it and closes it (also when the start fails half-way:
    `stop()` must cope with a partial start); `close()` defaults to `stop()`."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()  # what did start (processes, threads) does not outlive the failure
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
