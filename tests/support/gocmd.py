"""Run the real go command in a sealed, throwaway environment that only talks to 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["GoError", "go_env", "run_go"]


class GoError(RuntimeError):
    """A go command failed; carries the completed process."""

    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.proc = proc
        super().__init__(
            f"{' '.join(map(str, proc.args))} exited with {proc.returncode}:\n"
            f"{proc.stderr}\n{proc.stdout}"
        )


def go_env(tmp: Path, proxy: str, sumdb: str | None) -> dict[str, str]:
    """A complete environment (not merged with ``os.environ``) for go commands under ``tmp``.

    ``proxy`` becomes ``$GOPROXY`` with no ``direct`` fallback (404/410 then fail the
    command). ``sumdb`` is ``$GOSUMDB`` (``"KEY URL"``, or just ``"KEY"`` to reach the
    database through ``$GOPROXY/sumdb/NAME/``); None turns checksum checks off. GOPATH,
    GOMODCACHE, GOCACHE and HOME live under ``tmp``; the user's go env file is ignored and
    ``TESTGONETWORK=panic`` makes the go command crash on any non-loopback HTTP request.
    """
    tmp = Path(tmp)
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(tmp / "home"),
        "GOENV": "off",
        "GOPATH": str(tmp / "gopath"),
        "GOMODCACHE": str(tmp / "modcache"),
        "GOCACHE": str(tmp / "gocache"),
        "GOFLAGS": "-mod=mod",
        "GO111MODULE": "on",
        "GOPROXY": proxy,
        "GOSUMDB": sumdb if sumdb is not None else "off",
        "GONOSUMDB": "",
        "GONOPROXY": "",
        "GOPRIVATE": "",
        "GOINSECURE": "",
        "GOVCS": "*:off",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
        "TESTGONETWORK": "panic",
        "TESTGOVCS": "panic",
    }


def run_go(
    args: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    timeout: float = 120,
    *,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``go ARGS`` in ``cwd``; raise :class:`GoError` (with stderr) on failure if ``check``."""
    proc = subprocess.run(
        ["go", *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise GoError(proc)
    return proc
