"""Why an online-learning request was refused."""

from __future__ import annotations

from recloop.core.errors import ConflictError, NotFoundError


class UpdateRunningError(ConflictError):
    """Another update holds the lock."""

    code = "update_running"
    hint = "check the status and retry"


class CheckpointNotFoundError(NotFoundError):
    code = "checkpoint_not_found"

    def __init__(self, version: str) -> None:
        super().__init__(f"no checkpoint of version {version!r}", version=version)
        self.version = version


class NoPreviousCheckpointError(ConflictError):
    code = "no_previous_checkpoint"

    def __init__(self) -> None:
        super().__init__("no checkpoint other than the champion to roll back to")
