"""The CLI as a real process whose stderr is read while it runs, for tests that act on it mid-run (send a
signal, race another job). Every wait is bounded."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300


class CliProcess:
    def __init__(self, *args):
        command = [sys.executable, "-m", "recsys.cli", *map(str, args)]
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"}
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True)
        self._reader.start()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_until(self, ready, what: str, timeout: float = TIMEOUT_S) -> None:
        """Poll `ready()` until it holds; fail if the process ends or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while not ready():
            assert time.monotonic() < deadline, f"{what}: not within {timeout} s\n{self.stderr[-2000:]}"
            assert self.process.poll() is None, f"{what}: the process ended first\n{self.stderr[-2000:]}"
            time.sleep(0.02)

    def wait_for_line(self, text: str, timeout: float = TIMEOUT_S) -> None:
        self.wait_until(lambda: any(text in line for line in list(self.lines)), repr(text), timeout)

    def finish(self, timeout: float = TIMEOUT_S) -> tuple[int, str]:
        """(exit code, all of stderr) once the process has ended and its stderr is read to the end."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        return code, self.stderr
