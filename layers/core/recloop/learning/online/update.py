"""One online step of a served model on the buffered events: MF vectors, then (lgbm) the ranker's leaves.

numpy is imported only by the step itself: status and rollback run in functions without the numeric layer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import takewhile
from typing import Any

from recloop.core.events import Interaction
from recloop.core.settings import Settings
from recloop.models.bundle import ModelKind


@dataclass(frozen=True)
class UpdatedModel:
    """The model after one online step: each part updated only where its held-out check passed."""

    model: Any  # the same kind as the input: MatrixFactorisation or RankerModel
    step: Any  # recloop.models.online_mf.OnlineStep: the MF vectors
    refit: Any = None  # recloop.models.online_ranker.RefitStep: the ranker's leaves (lgbm, enough queries)
    served_hits: Any = None  # recloop.serving.served_log.ServedHits: the served lists' live hit rate (lgbm)

    @property
    def improved(self) -> bool:
        return self.step.improved or (self.refit is not None and self.refit.improved)


def online_hyperparameters(settings: Settings) -> Any:
    from recloop.models.online_mf import OnlineHyperparameters

    return OnlineHyperparameters(
        batch_size=settings.online_learning_batch_size,
        learning_rate=settings.online_learning_learning_rate,
        refit_decay=settings.online_learning_refit_decay,
        tolerance=settings.online_learning_tolerance,
        attribution_window_seconds=settings.attribution_window_seconds,
    )


def apply_update(
    kind: ModelKind, model: Any, events: list[Interaction], params: Any, served_newest_first: Iterable[Any] = ()
) -> UpdatedModel:
    """One online step of a served model (`mf` or `lgbm`). A kept MF step is written into the model's MF
    (recloop.models.online_mf); a kept ranker refit makes a new RankerModel of the refit leaf values.

    `served_newest_first` is the served-feature log (recloop.serving.served_log.ServedFeatures), newest record
    first, for the ranker's refit; it is read only as far as the refit needs.
    """
    from recloop.models.online_mf import update_mf

    step = update_mf(model.mf if kind is ModelKind.LGBM else model, events, params)
    if kind is not ModelKind.LGBM:
        return UpdatedModel(step.mf, step)
    from recloop.models.online_ranker import MAX_REFIT_QUERIES, refit_ranker
    from recloop.models.ranker import RankerModel
    from recloop.serving.served_log import labelled_queries, served_hits

    # The log as far back as any event of the buffer can label it: read once, used twice.
    oldest_useful = min((event.timestamp for event in events), default=float("inf")) - params.attribution_window_seconds
    served = list(takewhile(lambda query: query.ts >= oldest_useful, served_newest_first))
    hits = served_hits(served, events, params.attribution_window_seconds)
    queries = labelled_queries(
        served,
        events,
        params.attribution_window_seconds,
        split_at=step.heldout_from,
        per_side=MAX_REFIT_QUERIES,
    )
    refit = None
    if len(queries):
        refit = refit_ranker(model, queries, step.heldout_from, params.refit_decay, params.tolerance)
    if refit is not None and refit.improved:
        return UpdatedModel(RankerModel(step.mf, trees=refit.trees), step, refit, hits)
    return UpdatedModel(model, step, refit, hits)  # the ranker as it was, its MF updated in place if the step was kept


def published_metadata(parent: Any, events: list[Interaction], params: Any, result: Any, position: Any) -> Any:
    """The metadata of the version an update publishes: a child of `parent` that has also seen `events`, the
    buffer's events through `position`."""
    from recloop.models.bundle import DataWindow, ModelMetadata
    from recloop.registry.versions import new_version_id

    return ModelMetadata(
        version=new_version_id(parent.kind),
        kind=parent.kind,
        parent_version=parent.version,
        data_window=DataWindow(
            start=parent.data_window.start,
            end=max(e.timestamp for e in events),
            interactions=parent.data_window.interactions + len(events),
        ),
        feature_spec=dict(parent.feature_spec),
        online_position=position,
        hyperparameters={
            **parent.hyperparameters,
            "online": {
                "batch_size": params.batch_size,
                "learning_rate": params.learning_rate,
                "epochs": params.epochs,
                "refit_decay": params.refit_decay,
            },
        },
        metrics={
            name: float(value)
            for name, value in {
                "online_error_before": result.error_before,
                "online_error_after": result.error_after if result.mf_updated else result.error_before,
                "online_events": len(events),
                "online_ranker_ndcg_before": result.ranker_ndcg_before,
                "online_ranker_ndcg_after": result.ranker_ndcg_after,
            }.items()
            if value is not None
        },
    )
