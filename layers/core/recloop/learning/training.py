"""Training pipeline: prepare a dataset, train a candidate, evaluate it against the champion, register it.

Plain functions, called by TrainFunction and by the CLI `python -m recloop.tools.train`.

Point in time: the ranker's training rows come from replaying the training window through the same feature
store code that serves (in process memory): each row holds the features as they were just before its event.
The MF model that feeds the ranker's `mf_score` is trained only on events before the ranker's label window.

Every trained version carries its drift reference (recloop.drift.reference): what it was trained on, as the drift
check compares live traffic with it. A ranker's is its training queries (one row each) with its own scores, plus
the training events' type and category mix; any other kind's is the event mix alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from recloop.core.events import POSITIVE_EVENTS, Interaction, K
from recloop.core.progress import Progress, no_progress, within
from recloop.core.settings import Settings
from recloop.drift.features import ITEM_CATEGORY, MONITORED_FEATURES, FeatureSet, Source
from recloop.drift.reference import (
    MAX_REFERENCE_ROWS,
    ReferenceSample,
    build_reference,
    event_rows,
    one_row_per_query,
    with_reference,
)
from recloop.learning.datasets import sort_by_time, time_split
from recloop.learning.evaluation import evaluate_offline, offline_store
from recloop.models.bundle import DataWindow, ModelBundle, ModelKind, ModelMetadata
from recloop.models.loading import load_model
from recloop.models.mf import MatrixFactorisation, MFHyperparameters, train_mf
from recloop.serving.champion import TrainedModel
from recloop.serving.recommender import Recommender
from recloop.serving.scorers import CooccurrenceScorer

# Items' categories, many items in one read: the feature store's `categories_of`.
CategoriesOf = Callable[[Sequence[str]], Mapping[str, Iterable[str]]]


@dataclass(frozen=True)
class RankerHyperparameters:
    label_fraction: float = 0.35  # the last share of the training window gives the ranker's labelled queries
    candidates: int = 10  # requested list length while collecting candidates (sources over-fetch)
    negatives_per_query: int = 40
    max_queries: int = 20_000
    num_leaves: int = 31
    learning_rate: float = 0.1
    rounds: int = 120  # prediction cost is linear in trees: 120 keeps re-ranking 200 items near 1.5 ms
    min_data_in_leaf: int = 40
    seed: int = 23


# -- data -------------------------------------------------------------------------------------------------------


def offline_settings(settings: Settings) -> Settings:
    # An offline replay runs thousands of requests a second: no caches, every read is exact.
    return settings.model_copy(update={"popularity_cache_seconds": 0.0, "item_feature_cache_seconds": 0.0})


# -- training ---------------------------------------------------------------------------------------------------


def ranker_rows(
    events: Sequence[Interaction],
    mf: MatrixFactorisation,
    settings: Settings,
    params: RankerHyperparameters,
    label_start: int,
    *,
    progress: Progress = no_progress,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Feature rows, labels and query sizes from the label window, each with features as of its event."""
    from recloop.serving.ranker_features import FeatureBuilder

    settings = offline_settings(settings)
    store = offline_store(settings, events[:label_start])
    model = TrainedModel("training", ModelKind.MF, mf, store, settings)
    recommender = Recommender(store, settings, lambda: model)
    features = FeatureBuilder(store, mf, CooccurrenceScorer(store, settings.popularity_prior_weight))
    rng = np.random.default_rng(params.seed)
    label_window = events[label_start:]
    positives = [n for n, e in enumerate(label_window) if e.event_type in POSITIVE_EVENTS]
    chosen = set(rng.choice(positives, min(len(positives), params.max_queries), replace=False).tolist())
    blocks, labels, groups = [], [], []
    for n, event in enumerate(label_window):
        if n in chosen:
            ctx, candidates, _ = recommender.candidates(event.user_id, params.candidates, now=event.timestamp)
            candidates = features.shortlist(ctx, candidates)  # what the ranker will see when serving
            if event.item_id in candidates and len(candidates) > 1:
                others = [c for c in candidates if c != event.item_id]
                picked = rng.choice(len(others), min(len(others), params.negatives_per_query), replace=False)
                query = [event.item_id, *[others[i] for i in picked]]
                blocks.append(features.rows(ctx, query))
                labels.append(np.array([1.0] + [0.0] * (len(query) - 1), dtype=np.float32))
                groups.append(len(query))
        store.apply(event)
        progress("ranker's training rows", n + 1, len(label_window))
    if not blocks:
        raise ValueError("no labelled query had its item among the candidates; more data is needed")
    return np.vstack(blocks), np.concatenate(labels), groups


@dataclass(frozen=True)
class RankerFit:
    """A trained ranker and the labelled queries it learned from (rows in FEATURE_NAMES order, query sizes)."""

    model: Any  # RankerModel
    info: dict[str, Any]
    rows: np.ndarray
    groups: list[int]


def train_ranker(
    events: Sequence[Interaction],
    settings: Settings,
    mf_params: MFHyperparameters,
    params: RankerHyperparameters,
    *,
    progress: Progress = no_progress,
) -> tuple[Any, dict[str, Any]]:
    """A RankerModel: LightGBM LambdaRank over point-in-time features, MF retrained on all events for serving."""
    fit = fit_ranker(events, settings, mf_params, params, progress=progress)
    return fit.model, fit.info


def fit_ranker(
    events: Sequence[Interaction],
    settings: Settings,
    mf_params: MFHyperparameters,
    params: RankerHyperparameters,
    *,
    progress: Progress = no_progress,
) -> RankerFit:
    """`train_ranker`, with the training queries handed out (the version's drift reference is made of them)."""
    import lightgbm

    from recloop.models.ranker import FEATURE_NAMES, RankerModel

    label_start = int(len(events) * (1 - params.label_fraction))
    mf_before_labels = train_mf(events[:label_start], mf_params, progress=within(progress, "before the label window"))
    rows, labels, groups = ranker_rows(events, mf_before_labels, settings, params, label_start, progress=progress)
    dataset = lightgbm.Dataset(rows, labels, group=groups, feature_name=list(FEATURE_NAMES), free_raw_data=False)
    booster = lightgbm.train(
        {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [10],
            "num_leaves": params.num_leaves,
            "learning_rate": params.learning_rate,
            "min_data_in_leaf": params.min_data_in_leaf,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.9,
            "bagging_freq": 1,
            "seed": params.seed,
            "num_threads": 2,
            "verbosity": -1,
        },
        dataset,
        num_boost_round=params.rounds,
        callbacks=[lambda env: progress("ranker's boosting rounds", env.iteration + 1, env.end_iteration)],
    )
    info = {"ranker_queries": len(groups), "ranker_rows": int(rows.shape[0])}
    return RankerFit(RankerModel(train_mf(events, mf_params, progress=progress), booster), info, rows, groups)


@dataclass
class TrainingResult:
    """Holdout metrics of candidate and champion; a metric is None when the holdout gave it nothing to measure."""

    bundle: ModelBundle
    candidate_metrics: dict[str, float | None]
    champion_metrics: dict[str, float | None] | None

    @property
    def candidate_hr(self) -> float:
        return comparable_hr(self.candidate_metrics)

    @property
    def champion_hr(self) -> float | None:
        """None without a champion."""
        return comparable_hr(self.champion_metrics) if self.champion_metrics is not None else None


def comparable_hr(metrics: dict[str, float | None]) -> float:
    """HR@10 for comparing candidate and champion: on a holdout without positives neither hit anything (0.0)."""
    value = metrics.get(f"hr_at_{K}")
    return 0.0 if value is None else value


def train_candidate(
    kind: ModelKind,
    events: Sequence[Interaction],
    settings: Settings,
    version: str,
    *,
    holdout_fraction: float = 0.1,
    champion: ModelBundle | None = None,
    parent_version: str | None = None,
    mf_params: MFHyperparameters | None = None,
    ranker_params: RankerHyperparameters | None = None,
    categories_of: CategoriesOf | None = None,
    progress: Progress = no_progress,
) -> TrainingResult:
    """Train on the earlier events, evaluate candidate and champion on the same later holdout, then refit on all.

    The bundle carries the version's drift reference; `categories_of` gives its category mix (see
    `drift_reference`). Each step is reported to `progress`."""
    mf_params = mf_params or MFHyperparameters()
    ranker_params = ranker_params or RankerHyperparameters()
    events = sort_by_time(events)
    train, holdout = time_split(events, holdout_fraction)
    candidate = within(progress, f"{kind.value} candidate")
    candidate_model, info, ranker = _fit(kind, train, settings, mf_params, ranker_params, progress=candidate)
    candidate_metrics = _evaluate(kind, candidate_model, train, holdout, settings, progress=candidate)
    champion_metrics = None
    if champion is not None:
        champion_model, champion_progress = load_model(champion), within(progress, "champion")
        champion_metrics = _evaluate(
            champion.metadata.kind, champion_model, train, holdout, settings, progress=champion_progress
        )
    if holdout:
        final = within(progress, f"{kind.value} on all events")
        final_model, info, ranker = _fit(kind, events, settings, mf_params, ranker_params, progress=final)
    else:
        final_model = candidate_model
    metadata = ModelMetadata(
        version=version,
        kind=kind,
        parent_version=parent_version,
        data_window=DataWindow(start=events[0].timestamp, end=events[-1].timestamp, interactions=len(events)),
        hyperparameters={
            "mf": asdict(mf_params),
            **({"ranker": asdict(ranker_params)} if kind is ModelKind.LGBM else {}),
            **info,
        },
        # Metadata metrics are numbers: what the holdout could not measure is left out.
        metrics={f"holdout_{k}": float(v) for k, v in candidate_metrics.items() if v is not None},
    )
    progress("drift reference")
    reference = drift_reference(version, events, categories_of, ranker)
    return TrainingResult(
        with_reference(_bundle(kind, final_model, metadata), reference), candidate_metrics, champion_metrics
    )


def drift_reference(
    version: str,
    events: Sequence[Interaction],
    categories_of: CategoriesOf | None,
    ranker: RankerFit | None = None,
    *,
    max_rows: int = MAX_REFERENCE_ROWS,
    seed: int = 0,
) -> ReferenceSample:
    """The drift reference of a version trained on `events`: a ranker's training queries (one row each, scored by
    it) and the events' type and category mix; the event mix alone for other kinds.

    Only what the reference keeps is scored and looked up: at most `max_rows` queries and events, drawn uniformly
    (then one row per query, as the live window keeps one per request). Without `categories_of` the category mix
    is left out, and the check reports it untested rather than compare live categories with none.
    """
    rng = np.random.default_rng(seed)
    served = np.zeros((0, len(MONITORED_FEATURES.columns(Source.SERVED))), dtype=np.float32)
    if ranker is not None:
        groups = np.asarray(ranker.groups, dtype=np.int64)
        queries = _uniform_subset(len(groups), max_rows, rng)
        starts = np.concatenate([[0], np.cumsum(groups)[:-1]])
        rows = ranker.rows[np.concatenate([np.arange(starts[q], starts[q] + groups[q]) for q in queries])]
        served = one_row_per_query(rows, ranker.model.predict(rows), groups[queries].tolist(), seed)
    kept = [events[n] for n in _uniform_subset(len(events), max_rows, rng)]
    if categories_of is not None:
        return build_reference(version, served, event_rows(kept, categories_of), max_rows=max_rows, seed=seed)
    without_categories = FeatureSet(tuple(f for f in MONITORED_FEATURES if f.name != ITEM_CATEGORY))
    layout = MONITORED_FEATURES.columns(Source.EVENTS)
    kept_columns = [n for n, name in enumerate(layout) if name != ITEM_CATEGORY]
    rows_without = [tuple(row[n] for n in kept_columns) for row in event_rows(kept, lambda _: {})]
    return build_reference(version, served, rows_without, features=without_categories, max_rows=max_rows, seed=seed)


def _uniform_subset(size: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most `limit` of `size` elements, drawn uniformly, in order."""
    if size <= limit:
        return np.arange(size)
    return np.sort(rng.choice(size, limit, replace=False))


def _fit(
    kind: ModelKind,
    events: Sequence[Interaction],
    settings: Settings,
    mf_params: MFHyperparameters,
    ranker_params: RankerHyperparameters,
    *,
    progress: Progress,
) -> tuple[Any, dict[str, Any], RankerFit | None]:
    if kind is ModelKind.MF:
        return train_mf(events, mf_params, progress=progress), {}, None
    if kind is ModelKind.LGBM:
        fit = fit_ranker(events, settings, mf_params, ranker_params, progress=progress)
        return fit.model, fit.info, fit
    return None, {}, None  # popularity: nothing to learn, the live features are the model


def _evaluate(
    kind: ModelKind,
    model: Any,
    history: Sequence[Interaction],
    holdout: Sequence[Interaction],
    settings: Settings,
    *,
    progress: Progress,
) -> dict[str, float | None]:
    settings = offline_settings(settings)
    if model is None:
        return evaluate_offline(settings, history, holdout, progress=progress)
    return evaluate_offline(
        settings,
        history,
        holdout,
        lambda store: TrainedModel("evaluation", kind, model, store, settings),
        progress=progress,
    )


def _bundle(kind: ModelKind, model: Any, metadata: ModelMetadata) -> ModelBundle:
    if model is None:
        return ModelBundle(metadata, {})
    return model.to_bundle(metadata)
