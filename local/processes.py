"""Processes that the local runtime starts, and how it finds and stops them again. Each one runs in its own
process group with a pid file under `.local/<profile>/run`, so stopping a profile (also after a crash, from
another shell or on the next start) ends exactly what that profile started, children included, and nothing
else. Also the small helpers the other modules share: the log line, a port check and a readiness wait.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recloop.tools.progress import write_line

if TYPE_CHECKING:
    from local.services import Profile


def log(message: str) -> None:
    """A line on stderr (below the progress line drawn there, if any)."""
    write_line(f"[recloop] {message}", sys.stderr)


class Processes:
    """Processes of one profile, tracked by pid files; each runs in its own process group."""

    def __init__(self, profile: Profile) -> None:
        self.run_dir = profile.state / "run"
        self.log_dir = profile.state / "logs"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        try:
            pid = int(self.pid_file(name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def start(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log_file:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file(name).write_text(f"{process.pid}\n")
        return process

    def record_self(self, name: str) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.pid_file(name).write_text(f"{os.getpid()}\n")

    def stop(self, name: str, grace_seconds: float = 10.0) -> bool:
        pid = self.pid(name)
        self.pid_file(name).unlink(missing_ok=True)
        if pid is None or pid == os.getpid():
            return False
        _kill_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        # Whatever is left of the group (children that ignored SIGTERM or outlived the leader).
        _kill_group(pid, signal.SIGKILL)
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def _kill_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group the process leads (every process here starts its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(check, timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # anything not ready yet is retried until the deadline
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s" + (f": {last_error}" if last_error else ""))
