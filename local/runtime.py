"""The whole RecLoop stack on one machine, no Docker: embedded Redis, LocalStack on the host, the SAM app
deployed into it through CloudFormation, and the API stage served at http://localhost:<port>. This module only
orchestrates the steps, in order, for one profile (the pieces live in toolchain, processes, services, deploy and
proxy), and makes sure that whatever a start-up began is stopped again, also after a crash: a later `up()` first
stops what an earlier run of the profile left behind, and a second start while the profile runs is refused. Each
step is reported to a `progress` (`make dev` draws it on a terminal).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from local.deploy import deploy, wait_for_wiring
from local.processes import Processes, log
from local.proxy import ApiProxy
from local.services import (
    Profile,
    clear_stale_s3_storage,
    start_localstack,
    start_redis,
)
from recloop.core.progress import Progress, no_progress


@dataclass
class RunningStack:
    profile: Profile
    redis_url: str
    outputs: dict[str, str]
    proxy: ApiProxy

    @property
    def api_url(self) -> str:
        return self.profile.api_url


class AlreadyRunningError(RuntimeError):
    """The profile's stack is up, started by another process."""


def down(profile: Profile) -> list[str]:
    """Stop everything this profile started (the foreground runner first, so it exits cleanly)."""
    processes = Processes(profile)
    stopped = [name for name in ("runner", "localstack", "redis") if processes.stop(name)]
    clear_stale_s3_storage(profile)
    return stopped


def up(profile: Profile, progress: Progress = no_progress) -> RunningStack:
    """Bring the stack up; stale processes and state of an earlier crashed run are cleared first."""
    processes = Processes(profile)
    runner = processes.pid("runner")
    if runner is not None and runner != os.getpid():
        raise AlreadyRunningError(f"RecLoop ({profile.name}) is already running (pid {runner}) at {profile.api_url}")
    stale = down(profile)
    if stale:
        log(f"cleared stale processes of an earlier run: {', '.join(stale)}")
    processes.record_self("runner")
    started = time.monotonic()
    progress("starting Redis")
    redis_url = start_redis(profile, processes)
    progress("starting LocalStack")
    start_localstack(profile, processes)
    log(f"LocalStack ready after {time.monotonic() - started:.1f} s")
    outputs = deploy(profile, redis_url, progress)
    progress("waiting for the event source mappings")
    wait_for_wiring(profile)
    progress("starting the API proxy")
    proxy = ApiProxy(profile, outputs["RestApiId"])
    proxy.start()
    log(f"stack up in {time.monotonic() - started:.1f} s; API at {profile.api_url}")
    return RunningStack(profile, redis_url, outputs, proxy)


@contextlib.contextmanager
def running(profile: Profile, progress: Progress = no_progress) -> Iterator[RunningStack]:
    """The stack for the duration of a block; whatever was started is stopped, also when start-up fails."""
    stack = None
    try:
        stack = up(profile, progress)
        yield stack
    finally:
        if stack is not None:
            stack.proxy.stop()
        down(profile)
