"""The experiment lifecycle: create (each variant's version checked to exist and load), start, stop, results, and
the conclusion of a decided experiment, with the winner promoted to champion when the experiment asks for it.

    draft --start--> running --stop--> stopped     (no winner: the final results are kept, nothing is promoted)
                             --stop, or a results read with auto_promote, once decided--> concluded

At most one experiment runs at a time: starting a second is refused (409, naming the running one). Overlapping
experiments would share users and the champion's traffic, and the decision rule assumes one comparison per user.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict, Field

from recloop.core.errors import ConflictError, InvalidInputError, NotFoundError
from recloop.core.settings import AllocationStrategy
from recloop.experiments.model import (
    Decision,
    Experiment,
    ExperimentStatus,
    Guardrails,
    Variant,
    new_experiment_id,
    now_iso,
)
from recloop.experiments.statistics import Verdict, evaluate
from recloop.experiments.store import ExperimentStore
from recloop.models.loading import load_model
from recloop.registry.errors import ConcurrentPromotionError, CorruptModelError
from recloop.registry.model_registry import ModelRegistry
from recloop.registry.versions import MODELS_PREFIX, check_version_id

if TYPE_CHECKING:
    from recloop.experiments.counters import ArmCounts, ExperimentCounters

logger = Logger(child=True)

MAX_VARIANTS = 10
WEIGHT_TOLERANCE = 1e-6
MAX_PROMOTION_REASON = 500
# s3://<bucket>/models/<version>[/<file>...]: a registry version named by where it is stored.
_MODEL_URI = re.compile(rf"^s3://(?P<bucket>[^/]+)/{MODELS_PREFIX}(?P<version>[^/]+)(?:/.*)?$")


# ---- requests --------------------------------------------------------------------------------------------------------


class VariantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    model_version: str | None = Field(None, max_length=128, description="a registered model version")
    model_path: str | None = Field(
        None,
        max_length=1024,
        description="alias of model_version: the S3 URI of a registered version (s3://<bucket>/models/<version>/...); "
        "any other path is ignored when model_version is given",
    )
    weight: float | None = Field(None, gt=0, le=1, description="fixed_split only: this variant's share")


class GuardrailsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_latency_ratio: float = Field(
        Guardrails().max_latency_ratio, ge=1, le=100, description="challenger p95 latency ceiling, x control's"
    )
    min_conversions_per_arm: int = Field(Guardrails().min_conversions_per_arm, ge=1, le=1_000_000)


class ExperimentSpec(BaseModel):
    """The guide's body, plus the optional settings of this implementation."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    variants: list[VariantSpec] = Field(
        min_length=2, max_length=MAX_VARIANTS, description="the first is the control the others are compared with"
    )
    allocation_strategy: AllocationStrategy | None = Field(None, description="default: DEFAULT_ALLOCATION_STRATEGY")
    traffic_percentage: float | None = Field(
        None, gt=0, le=100, description="share of users in the experiment; default: DEFAULT_TRAFFIC_PERCENTAGE"
    )
    epsilon: float = Field(0.1, gt=0, lt=1, description="epsilon_greedy's exploration share")
    auto_promote: bool = Field(False, description="make the winner champion once decided")
    guardrails: GuardrailsSpec = Field(default_factory=GuardrailsSpec)


# ---- results ---------------------------------------------------------------------------------------------------------


class VariantResult(BaseModel):
    variant_id: str
    name: str
    model_version: str
    impressions: int
    conversions: int
    negatives: int
    conversion_rate: float
    interval_low: float = Field(description="anytime-valid lower bound of the conversion rate")
    interval_high: float
    avg_latency_ms: float | None
    p95_latency_ms: float | None
    probability_best: float | None


class SampleRatioCheck(BaseModel):
    p_value: float | None = Field(description="chi-square p-value of the observed split (fixed_split only)")
    flagged: bool = Field(description="p < 0.001: the split is not what was asked; no decision is made")


class ExperimentResults(BaseModel):
    experiment_id: str
    name: str
    description: str
    status: ExperimentStatus
    allocation_strategy: AllocationStrategy
    traffic_percentage: float
    auto_promote: bool
    variants: list[VariantResult]
    winning_variant: str | None = Field(description="set once the decision rule has declared a winner")
    confidence: float
    decided: bool
    reason: str = Field(description="why there is, or is not yet, a winner")
    total_impressions: int
    total_conversions: int
    srm: SampleRatioCheck
    decision: Decision | None
    created_at: str
    started_at: str | None
    stopped_at: str | None


# ---- refusals --------------------------------------------------------------------------------------------------------


class ExperimentFinishedError(ConflictError):
    code = "experiment_finished"
    hint = "create a new experiment"

    def __init__(self, experiment: Experiment) -> None:
        super().__init__(
            f"experiment {experiment.experiment_id!r} is {experiment.status.value} and cannot run again",
            experiment_id=experiment.experiment_id,
            status=experiment.status.value,
        )


class ExperimentAlreadyRunningError(ConflictError):
    code = "experiment_running"
    hint = "stop it first: one experiment runs at a time"

    def __init__(self, running: Experiment) -> None:
        super().__init__(
            f"experiment {running.experiment_id!r} ({running.name}) is running",
            running_experiment_id=running.experiment_id,
        )


class VariantUnavailableError(ConflictError):
    """A variant's version was deleted after the experiment was created."""

    code = "model_not_found"

    def __init__(self, field: str, version: str) -> None:
        super().__init__(f"{field}: model version {version!r} is no longer registered", field=field, version=version)


# ---- the service -----------------------------------------------------------------------------------------------------


class ExperimentService:
    def __init__(
        self,
        store: ExperimentStore,
        counters: ExperimentCounters,
        registry: ModelRegistry,
        *,
        default_allocation_strategy: AllocationStrategy = AllocationStrategy.THOMPSON_SAMPLING,
        default_traffic_percentage: float = 100.0,
    ) -> None:
        self.store = store
        self.counters = counters
        self.registry = registry
        self.default_allocation_strategy = default_allocation_strategy
        self.default_traffic_percentage = default_traffic_percentage

    # Create.
    def create(self, spec: ExperimentSpec) -> Experiment:
        """A draft experiment; InvalidInputError naming the field for a body that cannot make one."""
        strategy = spec.allocation_strategy or self.default_allocation_strategy
        seen: set[str] = set()
        for index, variant in enumerate(spec.variants):
            if variant.name in seen:
                raise InvalidInputError(f"{variant.name!r} names two variants", field=f"variants.{index}.name")
            seen.add(variant.name)
        _check_weights(spec.variants, strategy)
        versions = [self._resolve_version(index, variant) for index, variant in enumerate(spec.variants)]
        self._check_versions_load(versions)
        experiment = Experiment(
            experiment_id=new_experiment_id(),
            name=spec.name,
            description=spec.description,
            variants=[
                Variant(variant_id=f"var_{index}", name=variant.name, model_version=version, weight=variant.weight)
                for index, (variant, version) in enumerate(zip(spec.variants, versions, strict=True))
            ],
            allocation_strategy=strategy,
            traffic_percentage=(
                spec.traffic_percentage if spec.traffic_percentage is not None else self.default_traffic_percentage
            ),
            epsilon=spec.epsilon,
            auto_promote=spec.auto_promote,
            guardrails=Guardrails(**spec.guardrails.model_dump()),
        )
        return self.store.create(experiment)

    def _resolve_version(self, index: int, variant: VariantSpec) -> str:
        """The registry version a variant names: model_version, else the version in model_path's S3 URI."""
        version_field, path_field = f"variants.{index}.model_version", f"variants.{index}.model_path"
        path_version = None
        if variant.model_path is not None:
            match = _MODEL_URI.match(variant.model_path)
            if match is not None:
                if match["bucket"] != self.registry.objects.bucket:
                    raise InvalidInputError(
                        f"{variant.model_path!r} is not in this deployment's bucket ({self.registry.objects.bucket})",
                        field=path_field,
                    )
                path_version = match["version"]
            elif variant.model_version is None:
                raise InvalidInputError(
                    "not the S3 URI of a registered version (s3://<bucket>/models/<version>/); "
                    "give model_version instead",
                    field=path_field,
                )
        if variant.model_version is not None and path_version is not None and path_version != variant.model_version:
            raise InvalidInputError(
                f"names version {path_version!r} but model_version is {variant.model_version!r}", field=path_field
            )
        version = variant.model_version or path_version
        if version is None:
            raise InvalidInputError("give the registered version this variant serves", field=version_field)
        field = version_field if variant.model_version is not None else path_field
        try:
            check_version_id(version)
        except InvalidInputError as exc:
            raise InvalidInputError(str(exc), field=field) from exc
        if not self.registry.exists(version):
            raise InvalidInputError(f"model version {version!r} is not registered", field=field)
        return version

    def _check_versions_load(self, versions: list[str]) -> None:
        """Each distinct version loads exactly as serving will load it (an A/A test names one version twice)."""
        checked: set[str] = set()
        for index, version in enumerate(versions):
            if version in checked:
                continue
            try:
                load_model(self.registry.load(version))
            except (CorruptModelError, NotFoundError) as exc:
                raise InvalidInputError(
                    f"model version {version!r} does not load: {exc}", field=f"variants.{index}.model_version"
                ) from exc
            checked.add(version)

    # Read.
    def get(self, experiment_id: str) -> Experiment:
        return self.store.get(experiment_id)

    def list(self) -> list[Experiment]:
        return self.store.list()

    # Lifecycle.
    def start(self, experiment_id: str) -> Experiment:
        """Running from now on; starting a running experiment again changes nothing (a safe retry)."""
        experiment = self.store.get(experiment_id)
        if experiment.status == ExperimentStatus.RUNNING:
            return experiment
        if experiment.status != ExperimentStatus.DRAFT:
            raise ExperimentFinishedError(experiment)
        # Read from S3, not the cache: a start a few seconds after another one must see it.
        for running in self.store.running(use_cache=False):
            if running.experiment_id != experiment_id:
                raise ExperimentAlreadyRunningError(running)
        for index, variant in enumerate(experiment.variants):
            if not self.registry.exists(variant.model_version):
                raise VariantUnavailableError(f"variants.{index}.model_version", variant.model_version)
        started = experiment.model_copy(update={"status": ExperimentStatus.RUNNING, "started_at": now_iso()})
        self.store.save(started)
        logger.info("experiment started", extra={"experiment_id": experiment_id})
        return started

    def stop(self, experiment_id: str) -> ExperimentResults:
        """Stop serving the experiment. Decided: concluded with its winner (promoted with auto_promote); else
        stopped without one. The final results are kept with the definition. Stopping again changes nothing."""
        experiment = self.store.get(experiment_id)
        if experiment.status in (ExperimentStatus.STOPPED, ExperimentStatus.CONCLUDED):
            return self.results(experiment_id)
        results, verdict = self._evaluate(experiment)
        if experiment.status == ExperimentStatus.RUNNING and _winner(verdict) is not None:
            return self._conclude(experiment, results, verdict, promote=experiment.auto_promote)
        reason = "stopped before it started" if experiment.status == ExperimentStatus.DRAFT else verdict.reason
        decision = Decision(winning_variant=None, reason=f"stopped without a winner: {reason}",
                            impressions=results.total_impressions)  # fmt: skip
        return self._finish(experiment, results, ExperimentStatus.STOPPED, decision)

    def results(self, experiment_id: str) -> ExperimentResults:
        """The results as of now (a finished experiment: its final results, kept when it finished)."""
        experiment = self.store.get(experiment_id)
        if experiment.final_results is not None:
            return _with_lifecycle(ExperimentResults.model_validate(experiment.final_results), experiment)
        return self._evaluate(experiment)[0]

    def conclude_if_decided(self, experiment_id: str) -> ExperimentResults:
        """The results; when the experiment runs with auto_promote and the rule has declared a winner, the winner
        is promoted and the experiment concludes first. Without auto_promote a decided experiment keeps running
        until an operator stops it (the results name the winner meanwhile)."""
        experiment = self.store.get(experiment_id)
        if experiment.final_results is not None:
            return _with_lifecycle(ExperimentResults.model_validate(experiment.final_results), experiment)
        results, verdict = self._evaluate(experiment)
        if experiment.status == ExperimentStatus.RUNNING and experiment.auto_promote and _winner(verdict) is not None:
            return self._conclude(experiment, results, verdict, promote=True)
        return results

    def _conclude(
        self, experiment: Experiment, results: ExperimentResults, verdict: Verdict, *, promote: bool
    ) -> ExperimentResults:
        winner_name = _winner(verdict)
        assert winner_name is not None
        winner = experiment.variant(winner_name)
        reason = f"{winner.name} won at confidence {verdict.confidence:.4f}: {verdict.reason}"
        promoted_version = None
        if promote:
            promoted_version, outcome = self._promote(experiment, winner, reason)
            reason = f"{reason}; {outcome}"
        decision = Decision(
            winning_variant=winner.name,
            reason=reason,
            impressions=results.total_impressions,
            promoted_version=promoted_version,
        )
        return self._finish(experiment, results, ExperimentStatus.CONCLUDED, decision)

    def _promote(self, experiment: Experiment, winner: Variant, reason: str) -> tuple[str | None, str]:
        """Make the winner's version champion by compare-and-swap on the champion read here, so that an operator's
        promotion or rollback made meanwhile is never overridden. Returns (the version promoted, what happened)."""
        champion = self.registry.champion(use_cache=False)
        current = champion.version if champion is not None else None
        if current == winner.model_version:
            return winner.model_version, f"{winner.model_version} is already the champion"
        registry_reason = f"experiment {experiment.experiment_id}: {reason}"[:MAX_PROMOTION_REASON]
        try:
            self.registry.promote(winner.model_version, registry_reason, expected_current=current)
        except ConcurrentPromotionError as exc:
            logger.warning("winner not promoted", extra={"experiment_id": experiment.experiment_id, "error": str(exc)})
            return None, f"not promoted: {exc}"
        except (CorruptModelError, NotFoundError) as exc:
            logger.error("winner not promoted", extra={"experiment_id": experiment.experiment_id, "error": str(exc)})
            return None, f"not promoted: {exc}"
        logger.info(
            "experiment winner promoted",
            extra={"experiment_id": experiment.experiment_id, "model_version": winner.model_version},
        )
        return winner.model_version, f"{winner.model_version} promoted to champion (was {current})"

    def _finish(
        self, experiment: Experiment, results: ExperimentResults, status: ExperimentStatus, decision: Decision
    ) -> ExperimentResults:
        finished = experiment.model_copy(update={"status": status, "stopped_at": now_iso(), "decision": decision})
        final = _with_lifecycle(results, finished)
        finished.final_results = final.model_dump(mode="json")
        self.store.save(finished)
        logger.info(
            "experiment finished",
            extra={
                "experiment_id": experiment.experiment_id,
                "status": status.value,
                "winner": decision.winning_variant,
            },
        )
        return final

    def _evaluate(self, experiment: Experiment) -> tuple[ExperimentResults, Verdict]:
        names = [variant.name for variant in experiment.variants]
        counts = self.counters.counts(experiment.experiment_id, names)
        verdict = evaluate(experiment, counts)
        return _results(experiment, counts, verdict), verdict


def _check_weights(variants: list[VariantSpec], strategy: AllocationStrategy) -> None:
    weighted = [index for index, variant in enumerate(variants) if variant.weight is not None]
    if not weighted:
        return
    if strategy != AllocationStrategy.FIXED_SPLIT:
        raise InvalidInputError(
            f"only fixed_split takes weights ({strategy.value} allocates by results)",
            field=f"variants.{weighted[0]}.weight",
        )
    missing = [index for index in range(len(variants)) if index not in weighted]
    if missing:
        raise InvalidInputError("give every variant a weight, or none (equal shares)",
                                field=f"variants.{missing[0]}.weight")  # fmt: skip
    total = sum(variant.weight or 0.0 for variant in variants)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise InvalidInputError(f"the variants' weights sum to {total:g}; they must sum to 1", field="variants.weight")


def _winner(verdict: Verdict) -> str | None:
    return verdict.winning_variant if verdict.decided else None


def _results(experiment: Experiment, counts: dict[str, ArmCounts], verdict: Verdict) -> ExperimentResults:
    arms = {arm.variant: arm for arm in verdict.arms}
    variants = [
        VariantResult(
            variant_id=variant.variant_id, name=variant.name, **arms[variant.name].model_dump(exclude={"variant"})
        )
        for variant in experiment.variants
    ]
    return ExperimentResults(
        experiment_id=experiment.experiment_id,
        name=experiment.name,
        description=experiment.description,
        status=experiment.status,
        allocation_strategy=experiment.allocation_strategy,
        traffic_percentage=experiment.traffic_percentage,
        auto_promote=experiment.auto_promote,
        variants=variants,
        winning_variant=_winner(verdict),
        confidence=verdict.confidence,
        decided=verdict.decided,
        reason=verdict.reason,
        total_impressions=sum(c.impressions for c in counts.values()),
        total_conversions=sum(c.conversions for c in counts.values()),
        srm=SampleRatioCheck(p_value=verdict.srm_p_value, flagged=verdict.srm_flagged),
        decision=experiment.decision,
        created_at=experiment.created_at,
        started_at=experiment.started_at,
        stopped_at=experiment.stopped_at,
    )


def _with_lifecycle(results: ExperimentResults, experiment: Experiment) -> ExperimentResults:
    """Results with the experiment's current status, decision and times (final results are stored with them)."""
    update: dict[str, Any] = {
        "status": experiment.status,
        "decision": experiment.decision,
        "started_at": experiment.started_at,
        "stopped_at": experiment.stopped_at,
    }
    return results.model_copy(update=update)
