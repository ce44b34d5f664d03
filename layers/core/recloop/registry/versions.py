"""Immutable model versions in S3.

    models/<version>/<file>          the bundle's files, written first
    models/<version>/metadata.json   written last: a version exists once its metadata.json does

Bundle files and metadata.json are written with ``If-None-Match: *``: a committed version can never be
overwritten, and two writers of one version id cannot mix their files.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from aws_lambda_powertools import Logger
from pydantic import ValidationError

from recloop.adapters.objects import ObjectStore
from recloop.models.bundle import METADATA_FILE, CorruptModelError, ModelBundle, ModelKind, ModelMetadata, sha256
from recloop.registry.errors import InvalidVersionError, ModelNotFoundError, VersionExistsError

logger = Logger(child=True)

MODELS_PREFIX = "models/"
# A version is one path segment under models/; a leading letter or digit keeps it apart from `_history`.
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_FILE_SEGMENT = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def new_version_id(kind: ModelKind | str, now: datetime | None = None) -> str:
    """A fresh, sortable, collision-resistant version id such as ``mf-20261127T120000Z-ab12cd``."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{ModelKind(kind).value}-{stamp}-{secrets.token_hex(3)}"


def check_version_id(version: str) -> str:
    if not isinstance(version, str) or not VERSION_PATTERN.match(version):
        raise InvalidVersionError(
            f"{version!r} is not a valid model version: 1-128 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return version


def _check_file_name(name: str) -> None:
    segments = name.split("/")
    if name == METADATA_FILE or not all(_FILE_SEGMENT.match(s) and s not in (".", "..") for s in segments):
        raise ValueError(f"{name!r} cannot be stored as a bundle file")


def _created_at_key(metadata: ModelMetadata) -> tuple[float, str]:
    try:
        created = datetime.fromisoformat(metadata.created_at)
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return created.timestamp(), metadata.version
    except ValueError:
        return 0.0, metadata.version


class ModelVersions:
    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    @staticmethod
    def version_prefix(version: str) -> str:
        return f"{MODELS_PREFIX}{check_version_id(version)}/"

    def _key(self, version: str, name: str) -> str:
        return f"{self.version_prefix(version)}{name}"

    def register(self, bundle: ModelBundle) -> ModelMetadata:
        """Store a new version: every file first, metadata.json last (the commit marker).

        A version id is written once. Re-running a register that crashed half way with the same bytes
        completes it; different bytes under an uncommitted version id are refused, like a committed one.
        """
        version = check_version_id(bundle.metadata.version)
        for name in bundle.files:
            _check_file_name(name)
        metadata_key = self._key(version, METADATA_FILE)
        if self.objects.exists(metadata_key):
            raise VersionExistsError(version)
        files = bundle.serialised()
        metadata_bytes = files.pop(METADATA_FILE)
        for name, data in files.items():
            key = self._key(version, name)
            if not self.objects.put_if_absent(key, data):
                stored = self.objects.get(key)
                if stored is None or sha256(stored[0]) != sha256(data):
                    raise VersionExistsError(version, f"{name} was already written with different content")
        if not self.objects.put_if_absent(metadata_key, metadata_bytes, "application/json"):
            raise VersionExistsError(version)
        logger.info("model registered", extra={"model_version": version, "kind": bundle.metadata.kind.value})
        return bundle.metadata.model_copy(deep=True)

    def exists(self, version: str) -> bool:
        return self.objects.exists(self._key(version, METADATA_FILE))

    def _read_metadata(self, version: str) -> tuple[bytes, ModelMetadata]:
        stored = self.objects.get(self._key(version, METADATA_FILE))
        if stored is None:
            raise ModelNotFoundError(version)
        raw = stored[0]
        try:
            metadata = ModelMetadata.model_validate_json(raw)
        except ValidationError as exc:
            raise CorruptModelError(f"{version}: metadata.json is unreadable: {exc}") from exc
        if metadata.version != version:
            raise CorruptModelError(f"{version}: metadata.json names version {metadata.version!r}")
        return raw, metadata

    def get(self, version: str) -> ModelMetadata:
        """The metadata of a registered version (ModelNotFoundError if none, CorruptModelError if unreadable)."""
        return self._read_metadata(version)[1]

    def list_versions(self) -> list[ModelMetadata]:
        """Every committed version, newest first; versions still being written (no metadata.json) are left out."""
        versions: list[ModelMetadata] = []
        for version in self.objects.folders(MODELS_PREFIX):
            if not VERSION_PATTERN.match(version):
                continue  # _history/ and anything not written by this registry
            try:
                versions.append(self.get(version))
            except ModelNotFoundError:
                continue  # files written, metadata.json not yet: not a version
            except CorruptModelError as exc:
                logger.warning("unreadable model version left out of the list", extra={"error": str(exc)})
        versions.sort(key=_created_at_key, reverse=True)
        return versions

    def load(self, version: str) -> ModelBundle:
        """Every file of a version, checked against the checksums in its metadata (CorruptModelError if not)."""
        raw, metadata = self._read_metadata(version)
        files: dict[str, bytes] = {METADATA_FILE: raw}
        for name in metadata.files:
            try:
                _check_file_name(name)
            except ValueError as exc:
                raise CorruptModelError(f"{version}: {exc}") from exc
            stored = self.objects.get(self._key(version, name))
            if stored is None:
                raise CorruptModelError(f"{version}: {name} is missing")
            files[name] = stored[0]
        try:
            return ModelBundle.from_files(files)
        except CorruptModelError as exc:
            raise CorruptModelError(f"{version}: {exc}") from exc

    def delete(self, version: str) -> None:
        """Remove a version; metadata.json goes first, so a half-deleted version is simply not a version any more."""
        metadata = self.get(version)
        self.objects.delete(self._key(version, METADATA_FILE))
        for name in metadata.files:
            self.objects.delete(self._key(version, name))
