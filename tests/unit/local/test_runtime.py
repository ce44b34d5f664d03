"""Process bookkeeping of the local runtime: restarts after a crash, double starts, cleanup."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from local import runtime, services
from local.processes import Processes, _alive
from local.runtime import AlreadyRunningError
from local.services import Profile

PROFILE = Profile("unit", localstack_port=45999, api_port=48099, redis_port=46399)


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Profile.state and clear_stale_s3_storage look these up in local.services.
    monkeypatch.setattr(services, "LOCAL", tmp_path)
    monkeypatch.setattr(services, "LOCALSTACK_S3_STORAGE", tmp_path / "s3-storage")
    return tmp_path


def live_members_of_group(pgid: int) -> list[int]:
    """Processes of the group that are still running (zombies awaiting their reaper excluded)."""
    members = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True, check=False).stdout.split()
    return [int(pid) for pid in members if _alive(int(pid))]


def start_sleeper(processes: Processes, name: str) -> subprocess.Popen:
    return processes.start(name, [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), Path.cwd())


def test_down_stops_every_process_of_the_profile_and_its_children() -> None:
    processes = Processes(PROFILE)
    parent = processes.start(
        "localstack",
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)']); time.sleep(60)",
        ],
        dict(os.environ),
        Path.cwd(),
    )
    redis = start_sleeper(processes, "redis")
    time.sleep(0.5)
    assert len(live_members_of_group(parent.pid)) == 2

    assert sorted(runtime.down(PROFILE)) == ["localstack", "redis"]
    assert parent.wait(timeout=5) is not None and redis.wait(timeout=5) is not None
    assert live_members_of_group(parent.pid) == []
    assert not list(processes.run_dir.glob("*.pid"))


def test_stale_pid_files_after_a_crash_are_ignored() -> None:
    processes = Processes(PROFILE)
    processes.run_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    processes.pid_file("localstack").write_text(f"{dead.pid}\n")
    processes.pid_file("redis").write_text("not a pid\n")
    assert processes.pid("localstack") is None and processes.pid("redis") is None
    assert runtime.down(PROFILE) == []
    assert not processes.pid_file("localstack").exists()


def test_a_second_start_while_running_is_refused_without_touching_the_first() -> None:
    processes = Processes(PROFILE)
    runner = start_sleeper(processes, "runner")
    try:
        with pytest.raises(AlreadyRunningError, match="already running"):
            runtime.up(PROFILE)
        assert processes.pid("runner") == runner.pid
    finally:
        runtime.down(PROFILE)
    assert runner.wait(timeout=5) is not None


def test_down_never_signals_the_calling_process() -> None:
    processes = Processes(PROFILE)
    processes.record_self("runner")
    assert runtime.down(PROFILE) == []  # we are still here


def test_stale_s3_folders_of_the_profile_are_removed(isolated_state: Path) -> None:
    storage = isolated_state / "s3-storage"
    for name in ("recloop-unit-databucket-abc", "awslambda-us-east-1-tasks", "someone-else"):
        (storage / name).mkdir(parents=True)
    services.clear_stale_s3_storage(PROFILE)
    assert sorted(p.name for p in storage.iterdir()) == ["someone-else"]
