"""``tongka`` as a user runs it, for the tests and benchmarks that talk to a real server: the
console script, an environment without the caller's ``TONGKA_`` settings, and ``tongka serve``
as a child process on a free loopback port with its output in a log file.

One copy for the kill test (tests/test_service_job_kill.py) and the load benchmark
(bench/test_bench_service.py), so both start, wait for and stop a server the same way.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 120  # a bound on waiting, never an assertion about speed


def tongka_script() -> str | None:
    """The installed ``tongka`` console script (beside this Python first); None if missing."""
    beside = Path(sys.executable).with_name("tongka")
    return str(beside) if beside.exists() else shutil.which("tongka")


def clean_env(home: Path) -> dict[str, str]:
    """This process's environment without its ``TONGKA_`` settings, with ``home`` as home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONGKA_")}
    env["TONGKA_HOME"] = str(home)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServedTongka:
    """``tongka serve`` on 127.0.0.1; ``start`` returns once ``/healthz`` answers 200."""

    def __init__(self, script: str, home: Path, db: str, log: Path,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.script, self.home, self.db, self.log = script, home, db, log
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> ServedTongka:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [self.script, "--data-dir", str(self.home), "--db", self.db, "serve",
                 "--host", "127.0.0.1", "--port", str(port)],
                env=clean_env(self.home), stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}):\n{self.tail()}")
            if self._healthy():
                self.started()
                return self
            time.sleep(0.1)
        raise AssertionError(f"the server did not answer /healthz within "
                             f"{self.start_timeout_s} s:\n{self.tail()}")

    def started(self) -> None:
        """Called once the server answers; a subclass starts its own watching here."""

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, as a crash or the OOM killer."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, as an operator stops it; SIGKILL if it has not gone within 30 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""
