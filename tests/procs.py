"""Helpers for the crash tests: run a command and ``kill -9`` it (and the workers it started) at a chosen point."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence


def kill_when(cmd: Sequence[str], ready: Callable[[], bool], *, env: dict, cwd: Path, timeout: float = 180) -> None:
    """Start ``cmd`` in its own session, poll ``ready()`` every 50 ms and, once it holds, SIGKILL the whole
    process group.  Fails (with the command's stderr) if the command ended before it could be killed."""
    proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            if ready():
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
