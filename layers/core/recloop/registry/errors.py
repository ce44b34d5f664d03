"""The registry's errors. CorruptModelError (a version that cannot serve) is shared with bundles and loaders."""

from __future__ import annotations

from recloop.core.errors import ConflictError, InvalidInputError, NotFoundError
from recloop.models.bundle import CorruptModelError

__all__ = [
    "ConcurrentPromotionError",
    "CorruptModelError",
    "InvalidVersionError",
    "ModelNotFoundError",
    "NoPreviousVersionError",
    "VersionExistsError",
    "VersionInUseError",
]


class InvalidVersionError(InvalidInputError):
    """A version id that can never name a stored version (bad characters, too long, empty)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="version")


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"

    def __init__(self, version: str) -> None:
        super().__init__(f"model version {version!r} is not registered", version=version)
        self.version = version


class VersionExistsError(ConflictError):
    """Versions are immutable: a registered version id is never written again."""

    code = "version_exists"

    def __init__(self, version: str, detail: str = "") -> None:
        super().__init__(f"model version {version!r} already exists{': ' + detail if detail else ''}", version=version)
        self.version = version


class NoPreviousVersionError(ConflictError):
    """Rollback asked for with no champion, or a champion that has no predecessor."""

    code = "no_previous_version"


class VersionInUseError(ConflictError):
    code = "version_in_use"

    def __init__(self, version: str) -> None:
        super().__init__(f"version {version!r} is the champion or the version a rollback returns to", version=version)
        self.version = version


class ConcurrentPromotionError(ConflictError):
    """The champion kept changing under this promotion (or changed before a rollback could apply)."""

    code = "concurrent_change"
    hint = "read the champion and retry"
