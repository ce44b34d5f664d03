"""What drift detection monitors: a declarative list of features, each numeric or categorical, each read from one
stream of observations, each with the smallest effect worth an alarm.

Two streams feed the live window and the reference sample alike:

- `served`: one ranked candidate per recommend request, drawn uniformly from the candidates the ranker scored:
  its features as served (`recloop.serving.ranker_features`, in `recloop.models.ranker.FEATURE_NAMES` order) and
  the model's score for it. One row per request, because the rows of one request share the user's features: many
  rows of one request would count the same user several times and make the tests see more evidence than there is.
- `events`: one ingested interaction: its event type and the interacted item's categories.

A stream's row lists its features' values in the order of this list (`FeatureSet.columns`).

Features that trend by construction stay in the served layout (it is the ranker's row) but are not tested
(`MonitoredFeature.untested_because`): against any fixed baseline they drift, whatever the traffic. The ages grow
with wall-clock time; the lifetime counts (`item_events_log`, `user_events_log`) only grow while a lineage serves,
and a lineage may serve for long (its canary may lose), so testing them would start a retrain every hour. Their
decayed counterparts (`pop_log`, `user_engagement`) are tested: they move only when the audience or its rate does.
`mf_known` is kept: a growing share of items without a trained vector is the model going stale, which is what a
retrain is for.

Effect floors. Numeric features are compared by the Kolmogorov-Smirnov distance D (the largest gap between the two
cumulative distributions), categorical ones by the total variation distance (the largest gap between the shares
the two give to any set of labels): both are "the largest difference in probability of some event", on one 0-1
scale. On 1,000-row windows against a 5,000-row reference, the Benjamini-Hochberg-corrected p-values alone would
alarm on about 5% of checks without any drift (DRIFT_THRESHOLD 0.05); the floors bring that under 1% while a
0.25-sd mean shift (D ~ 0.10) or an event mix moving from 60/30/10 to 50/35/15 (TVD 0.10) is still caught
(`python -m bench.drift`). A label list with many values gets a higher floor: its TVD from noise alone is ~0.06 on
1,000 rows with 25 labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

NUMERIC_EFFECT_FLOOR = 0.07
FEW_LABELS_EFFECT_FLOOR = 0.06
MANY_LABELS_EFFECT_FLOOR = 0.10

PREDICTION_SCORE = "prediction_score"
EVENT_TYPE = "event_type"
ITEM_CATEGORY = "item_category"
# The label of an item without categories.
NO_CATEGORY = "none"


class FeatureKind(StrEnum):
    NUMERIC = "numeric"  # two-sample Kolmogorov-Smirnov, effect = KS distance D
    CATEGORICAL = "categorical"  # chi-square on the reference-vs-window table, effect = total variation distance


class Source(StrEnum):
    SERVED = "served"
    EVENTS = "events"


class MonitoredFeature(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1)
    kind: FeatureKind
    source: Source
    effect_floor: float = Field(gt=0, le=1, description="the smallest effect (KS D or TVD) that counts as drift")
    description: str = ""
    untested_because: str | None = Field(
        None, description="why the feature is monitored but not tested (it trends by construction); None: tested"
    )

    @property
    def tested(self) -> bool:
        return self.untested_because is None


@dataclass(frozen=True)
class FeatureSet:
    """The monitored features; their order within a source is the layout of that source's rows."""

    features: tuple[MonitoredFeature, ...]

    def __post_init__(self) -> None:
        names = [feature.name for feature in self.features]
        if not names or len(set(names)) != len(names):
            raise ValueError("a feature set needs at least one feature, and unique names")

    def __iter__(self) -> Iterator[MonitoredFeature]:
        return iter(self.features)

    def __len__(self) -> int:
        return len(self.features)

    def of(self, source: Source) -> tuple[MonitoredFeature, ...]:
        return tuple(feature for feature in self.features if feature.source is source)

    def columns(self, source: Source) -> tuple[str, ...]:
        """The layout of a row of `source`: its features' names, in list order."""
        return tuple(feature.name for feature in self.of(source))


def _numeric(
    name: str, description: str, source: Source = Source.SERVED, untested_because: str | None = None
) -> MonitoredFeature:
    return MonitoredFeature(
        name=name,
        kind=FeatureKind.NUMERIC,
        source=source,
        effect_floor=NUMERIC_EFFECT_FLOOR,
        description=description,
        untested_because=untested_because,
    )


def _labels(name: str, description: str, source: Source, floor: float = FEW_LABELS_EFFECT_FLOOR) -> MonitoredFeature:
    return MonitoredFeature(
        name=name, kind=FeatureKind.CATEGORICAL, source=source, effect_floor=floor, description=description
    )


# The served stream's features are the ranker's, in FEATURE_NAMES order, then the score (a test holds them equal).
# The 0/1 flags are categorical: a two-label table is the right test for them, KS on two values is not.
MONITORED_FEATURES = FeatureSet(
    (
        _numeric("mf_score", "MF affinity of the user for the item"),
        _labels("mf_known", "the item has a trained MF vector (0/1)", Source.SERVED),
        _numeric("cooc_score", "real-time co-occurrence score"),
        _numeric("pop_log", "log of the item's decayed popularity"),
        _numeric("pop_share", "popularity relative to the most popular item"),
        _numeric("item_pos_rate", "share of the item's events that are positive"),
        _numeric(
            "item_events_log",
            "log of the item's event count",
            untested_because="a lifetime count: it only grows while the lineage serves, whatever the audience",
        ),
        _numeric(
            "item_age_days",
            "days since the item's first event",
            untested_because="every item ages one day a day: it grows with wall-clock time whatever the traffic",
        ),
        _numeric(
            "item_idle_days",
            "days since the item's last event",
            untested_because="grows with wall-clock time for every item between its events (the long tail most)",
        ),
        _numeric(
            "user_events_log",
            "log of the user's event count",
            untested_because="a lifetime count: it only grows while the lineage serves, whatever the audience",
        ),
        _numeric("user_engagement", "the user's decayed engagement"),
        _numeric("category_affinity", "share of the user's recent items sharing a category with the item"),
        _labels("from_cooc", "proposed by co-occurrence (0/1)", Source.SERVED),
        _labels("from_mf", "proposed by MF (0/1)", Source.SERVED),
        _numeric(PREDICTION_SCORE, "the model's score for the candidate"),
        _labels(EVENT_TYPE, "the event-type mix", Source.EVENTS),
        _labels(ITEM_CATEGORY, "the interacted items' category mix", Source.EVENTS, MANY_LABELS_EFFECT_FLOOR),
    )
)


def category_label(categories: Iterable[str]) -> str:
    """One label per item, its whole category set (sorted), so each event counts once in the chi-square table."""
    names = sorted(set(categories))
    return "|".join(names) if names else NO_CATEGORY


def event_row(event_type: str, categories: Iterable[str]) -> tuple[str, str]:
    """An `events` row of MONITORED_FEATURES: (event type, category label)."""
    return str(event_type), category_label(categories)
