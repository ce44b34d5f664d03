"""The reference sample of a model version: the distribution its traffic is compared with.

Built at training from what the model learned from: the ranker's training rows (one per labelled query, drawn
uniformly, as the live window keeps one per request) scored by the model, and the training window's events. Each
stream is capped at MAX_REFERENCE_ROWS by uniform subsampling. It is stored with the version, as the bundle file
REFERENCE_FILE (npz: one float array per numeric feature, plus the categorical counts and the version in a JSON
member), so it is as immutable as the model. A version registered without one (an online update of a trained
version) is compared with its nearest ancestor's (`ReferenceStore.for_version`): the version carrying the reference
is the root of a lineage, and the served window and served baseline are the lineage's (recloop.drift.baselines).
The served stream of the training rows is kept for the record; checks compare served traffic with the lineage's
baseline, since training rows are point-in-time rows that served traffic never looks like.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from recloop.adapters.objects import ObjectStore
from recloop.core.errors import NotFoundError
from recloop.core.events import Interaction
from recloop.drift.features import MONITORED_FEATURES, FeatureSet, Source, event_row
from recloop.drift.samples import FeatureSample, sample_from_rows, served_matrix
from recloop.models.bundle import CorruptModelError, ModelBundle, sha256
from recloop.registry.errors import ModelNotFoundError
from recloop.registry.versions import ModelVersions

REFERENCE_FILE = "drift_reference.npz"
MAX_REFERENCE_ROWS = 5_000
# How far up a version's parents a reference is looked for (online updates chain one version per update).
MAX_ANCESTORS = 1_000
_META_MEMBER = "meta"
_NUMERIC_MEMBER = "numeric:"


class ReferenceNotFoundError(NotFoundError):
    code = "drift_reference_not_found"

    def __init__(self, version: str) -> None:
        super().__init__(f"model version {version!r} and its ancestors carry no drift reference", version=version)


class _ReferenceDocument(BaseModel):
    """A reference sample as stored: what pydantic checks when one is read back."""

    version: str
    created_at: str
    rows: dict[Source, int]
    numeric: dict[str, list[float]] = Field(default_factory=dict)
    categorical: dict[str, dict[str, int]] = Field(default_factory=dict)


@dataclass(frozen=True)
class ReferenceSample:
    version: str
    created_at: str
    rows: dict[Source, int]  # rows of each stream the sample was taken from, after the cap
    sample: FeatureSample

    def to_npz(self) -> bytes:
        meta = self._document(numeric=False).model_dump_json().encode()
        members = {f"{_NUMERIC_MEMBER}{name}": values for name, values in self.sample.numeric.items()}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **members, **{_META_MEMBER: np.frombuffer(meta, dtype=np.uint8)})
        return buffer.getvalue()

    @classmethod
    def from_npz(cls, data: bytes) -> ReferenceSample:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                document = _ReferenceDocument.model_validate_json(archive[_META_MEMBER].tobytes())
                numeric = {
                    name[len(_NUMERIC_MEMBER) :]: np.asarray(archive[name], dtype=np.float64)
                    for name in archive.files
                    if name.startswith(_NUMERIC_MEMBER)
                }
        except (ValueError, KeyError, OSError, ValidationError) as exc:
            raise CorruptModelError(f"the drift reference is unreadable: {exc}") from exc
        return cls(document.version, document.created_at, document.rows, FeatureSample(numeric, document.categorical))

    def to_json(self) -> bytes:
        return self._document(numeric=True).model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ReferenceSample:
        document = _ReferenceDocument.model_validate_json(data)
        numeric = {name: np.asarray(values, dtype=np.float64) for name, values in document.numeric.items()}
        return cls(document.version, document.created_at, document.rows, FeatureSample(numeric, document.categorical))

    def _document(self, *, numeric: bool) -> _ReferenceDocument:
        return _ReferenceDocument(
            version=self.version,
            created_at=self.created_at,
            rows=self.rows,
            numeric={name: values.tolist() for name, values in self.sample.numeric.items()} if numeric else {},
            categorical=self.sample.categorical,
        )


def build_reference(
    version: str,
    served_rows: Sequence[Sequence[float]] | np.ndarray,
    event_rows: Sequence[Sequence[str]],
    *,
    features: FeatureSet = MONITORED_FEATURES,
    max_rows: int = MAX_REFERENCE_ROWS,
    seed: int = 0,
) -> ReferenceSample:
    """A reference from rows of the two streams, each cut to `max_rows` by a uniform subsample."""
    rng = np.random.default_rng(seed)
    served = served_matrix(features, served_rows)
    if len(served) > max_rows:
        served = served[np.sort(rng.choice(len(served), max_rows, replace=False))]
    events = list(event_rows)
    if len(events) > max_rows:
        events = [events[n] for n in np.sort(rng.choice(len(events), max_rows, replace=False))]
    return ReferenceSample(
        version=version,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        rows={Source.SERVED: len(served), Source.EVENTS: len(events)},
        sample=sample_from_rows(features, served, events),
    )


def one_row_per_query(rows: np.ndarray, scores: np.ndarray, groups: Sequence[int], seed: int = 0) -> np.ndarray:
    """One (features + score) row per query, drawn uniformly within the query: the served stream's unit."""
    rows, scores = np.asarray(rows), np.asarray(scores)
    if len(rows) != len(scores) or sum(groups) != len(rows):
        raise ValueError("rows, scores and query sizes disagree")
    rng = np.random.default_rng(seed)
    starts = np.concatenate([[0], np.cumsum(groups)[:-1]]).astype(np.int64)
    chosen = starts + (rng.random(len(groups)) * np.asarray(groups)).astype(np.int64)
    return np.column_stack([rows[chosen], scores[chosen]])


def event_rows(
    events: Iterable[Interaction], categories_of: Callable[[Sequence[str]], Mapping[str, Iterable[str]]]
) -> list[tuple[str, str]]:
    """The events stream's rows; `categories_of` is the feature store's (item -> categories, in one read)."""
    events = list(events)
    categories = categories_of(list(dict.fromkeys(event.item_id for event in events)))
    return [event_row(event.event_type.value, categories.get(event.item_id, ())) for event in events]


def reference_from_ranker_training(
    version: str,
    *,
    rows: np.ndarray,
    scores: np.ndarray,
    groups: Sequence[int],
    events: Iterable[Interaction],
    categories_of: Callable[[Sequence[str]], Mapping[str, Iterable[str]]],
    features: FeatureSet = MONITORED_FEATURES,
    max_rows: int = MAX_REFERENCE_ROWS,
    seed: int = 0,
) -> ReferenceSample:
    """The reference of a trained ranker: its training queries' rows (`learning.training.ranker_rows`) with the
    model's scores for them, and the training events with their items' categories."""
    served = one_row_per_query(rows, scores, groups, seed)
    return build_reference(
        version, served, event_rows(events, categories_of), features=features, max_rows=max_rows, seed=seed
    )


def with_reference(bundle: ModelBundle, reference: ReferenceSample) -> ModelBundle:
    """The bundle with its reference as one more file (checksummed with the others)."""
    # A copy of the metadata: a bundle's constructor records its files' checksums in the metadata it is given.
    return ModelBundle(bundle.metadata.model_copy(deep=True), {**bundle.files, REFERENCE_FILE: reference.to_npz()})


class ReferenceStore:
    """Reads a version's reference from the registry's bucket, without loading the model's files.

    Which version's reference a version is compared with is remembered in process: a version's files and parent
    never change, so after the first lookup of a version (one metadata read per version not seen yet: an online
    child's parent is usually known) the answer costs no round trip. The recommend path relies on that."""

    MAX_ENTRIES = 100_000

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.versions = ModelVersions(objects)
        # version -> (the version carrying its reference, that file's checksum), or None when none carries one
        self._carriers: dict[str, tuple[str, str] | None] = {}

    def reference_version(self, version: str) -> str:
        """The version whose reference `version` is compared with: itself, else its nearest ancestor carrying one
        (ReferenceNotFoundError if none does). Online children share it with their lineage."""
        return self._carrier(version)[0]

    def for_version(self, version: str) -> ReferenceSample:
        """The version's own reference, else its nearest ancestor's (ReferenceNotFoundError if none has one)."""
        carrier, digest = self._carrier(version)
        return self._read(carrier, digest)

    def _carrier(self, version: str) -> tuple[str, str]:
        walked: list[str] = []
        found: tuple[str, str] | None = None
        current: str | None = version
        for _ in range(MAX_ANCESTORS):
            if current is None:
                break
            if current in self._carriers:
                found = self._carriers[current]
                break
            try:
                metadata = self.versions.get(current)
            except ModelNotFoundError:
                break  # an ancestor deleted since: the chain ends here
            walked.append(current)
            digest = metadata.files.get(REFERENCE_FILE)
            if digest is not None:
                found = (current, digest)
                break
            current = metadata.parent_version
        if len(self._carriers) + len(walked) > self.MAX_ENTRIES:
            self._carriers.clear()
        # A version that is not registered gets the same (lasting) answer as one whose lineage has no reference.
        self._carriers.update(dict.fromkeys(walked or [version], found))
        if found is None:
            raise ReferenceNotFoundError(version)
        return found

    def _read(self, version: str, digest: str) -> ReferenceSample:
        stored = self.objects.get(f"{self.versions.version_prefix(version)}{REFERENCE_FILE}")
        if stored is None or sha256(stored[0]) != digest:
            raise CorruptModelError(f"{version}: {REFERENCE_FILE} is missing or does not match its checksum")
        return ReferenceSample.from_npz(stored[0])
