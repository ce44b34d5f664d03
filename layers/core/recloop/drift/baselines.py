"""The served stream's baseline: a lineage's own early served traffic, the reference of its served features.

A version's reference (recloop.drift.reference) holds the ranker's training rows: point-in-time rows of users part
way through their histories and of items young at the time. Serving sees whole histories and items that kept
ageing, so traffic drawn from the very population the model learned from still differs from those rows: that is
training-serving skew, not drift, and testing it would start a retrain every check. The served stream is compared
with the model's own traffic instead. The first check of a lineage (the version carrying the reference and its
online children) that finds at least `baseline_rows` served rows in the lineage's window stores that window as

    drift/baselines/<reference version>.npz   the served stream's sample (a ReferenceSample), written once

put-if-absent, so two checks racing keep the same one. That check reports the served features `baseline` and starts
a new window; the checks after it compare the served window with the baseline. The events stream keeps the
training reference: historical and live events are the same population.
"""

from __future__ import annotations

from datetime import UTC, datetime

from recloop.adapters.objects import ObjectStore
from recloop.drift.features import MONITORED_FEATURES, FeatureSet, Source
from recloop.drift.reference import ReferenceSample
from recloop.drift.samples import FeatureSample
from recloop.drift.window import WindowSample
from recloop.registry.versions import check_version_id

BASELINES_PREFIX = "drift/baselines/"


def baseline_key(reference_version: str) -> str:
    return f"{BASELINES_PREFIX}{check_version_id(reference_version)}.npz"


def stream_part(sample: FeatureSample, features: FeatureSet, source: Source) -> FeatureSample:
    """The features of one stream, out of a sample of both."""
    names = set(features.columns(source))
    return FeatureSample(
        {name: values for name, values in sample.numeric.items() if name in names},
        {name: counts for name, counts in sample.categorical.items() if name in names},
    )


def compared_reference(
    reference: ReferenceSample, baseline: ReferenceSample | None, features: FeatureSet = MONITORED_FEATURES
) -> ReferenceSample:
    """What a check compares the window with: the baseline's served features (none before there is a baseline, so
    they are not tested) and the training reference's events features."""
    served = stream_part(baseline.sample, features, Source.SERVED) if baseline else FeatureSample()
    events = stream_part(reference.sample, features, Source.EVENTS)
    return ReferenceSample(
        version=reference.version,
        created_at=reference.created_at,
        rows={
            Source.SERVED: baseline.rows[Source.SERVED] if baseline else 0,
            Source.EVENTS: reference.rows[Source.EVENTS],
        },
        sample=FeatureSample({**served.numeric, **events.numeric}, {**served.categorical, **events.categorical}),
    )


class ServedBaselines:
    def __init__(self, objects: ObjectStore, features: FeatureSet = MONITORED_FEATURES) -> None:
        self.objects = objects
        self.features = features

    def get(self, reference_version: str) -> ReferenceSample | None:
        stored = self.objects.get(baseline_key(reference_version))
        return ReferenceSample.from_npz(stored[0]) if stored is not None else None

    def take(self, reference_version: str, window: WindowSample, now: datetime | None = None) -> ReferenceSample:
        """The window's served stream as the lineage's baseline, unless one was stored first: the stored one."""
        baseline = ReferenceSample(
            version=reference_version,
            created_at=(now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds"),
            rows={Source.SERVED: window.rows[Source.SERVED], Source.EVENTS: 0},
            sample=stream_part(window.sample, self.features, Source.SERVED),
        )
        if self.objects.put_if_absent(baseline_key(reference_version), baseline.to_npz()):
            return baseline
        return self.get(reference_version) or baseline  # another check's; ours if that one was deleted since
