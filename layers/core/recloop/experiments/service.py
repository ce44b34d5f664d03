"""The experiment lifecycle: create (each variant's version checked to exist and load), start, stop, results, and
the conclusion of a decided experiment, with the winner promoted to champion when the experiment asks for it.

    draft --start--> running --stop--> stopped     (no winner: the final results are kept, nothing is promoted)
                             --stop, or a results read with auto_promote, once decided--> concluded
                             --a results read with auto_promote and rollout_stages, once decided--> rolling_out
    rolling_out --each stage's guardrails pass, the last promotes--> concluded
                --a stage's guardrails fail (champion unchanged)--> concluded
                --stop (champion unchanged)--> stopped

At most one experiment serves users at a time: starting a second is refused (409, naming the one that serves).
Overlapping experiments would share users and the champion's traffic, and the decision rule assumes one comparison
per user."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recloop.core.errors import ConflictError, InvalidInputError, NotFoundError
from recloop.core.settings import AllocationStrategy
from recloop.experiments.model import (
    SERVING_STATUSES,
    Decision,
    Experiment,
    ExperimentStatus,
    Guardrails,
    Rollout,
    RolloutStage,
    Variant,
    new_experiment_id,
    now_iso,
)
from recloop.experiments.statistics import ArmResult, RolloutCheck, Verdict, check_rollout_stage, evaluate
from recloop.experiments.store import SLOT_CLAIM_SECONDS, ExperimentStore, SlotClaim
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
MAX_ROLLOUT_STAGES = 10
# A change that lost to another one this many times in a row is refused (409): the experiment is busy.
CHANGE_ATTEMPTS = 3
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
    rollout_stage_impressions: int = Field(
        Guardrails().rollout_stage_impressions,
        ge=100,
        le=100_000_000,
        description="a rollout stage passes once the winner has served this many lists in it, guardrails holding",
    )


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
    rollout_stages: list[float] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ROLLOUT_STAGES,
        description="auto_promote only: before it becomes champion, the winner serves these percentages of all users "
        "in turn, against the champion, each stage checked by the guardrails (increasing, the last 100; "
        "e.g. [10, 25, 50, 100])",
    )
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


class RolloutResults(Rollout):
    current_share: float | None = Field(description="the winner's share of users now (None: the rollout ended)")
    stage_arms: list[ArmResult] = Field(description="the current stage's winner and champion arms")
    stage_check: str | None = Field(description="where the current stage's guardrails stand")


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
    rollout: RolloutResults | None = Field(None, description="the winner's staged rollout, once it began")
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
        state = {
            ExperimentStatus.RUNNING: "is running",
            ExperimentStatus.ROLLING_OUT: "is rolling out its winner",
        }.get(running.status, "is being started")
        super().__init__(
            f"experiment {running.experiment_id!r} ({running.name}) {state}",
            running_experiment_id=running.experiment_id,
        )


class ExperimentBusyError(ConflictError):
    """Other changes kept winning the race to change the experiment (or to claim the serving slot)."""

    code = "experiment_busy"
    hint = "read it again and retry"

    def __init__(self, experiment_id: str) -> None:
        super().__init__(f"{experiment_id} changed while this request ran", experiment_id=experiment_id)


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
        _check_rollout_stages(spec)
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
            rollout_stages=spec.rollout_stages,
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

    # Lifecycle. Every change is a write conditional on the experiment as read (ExperimentStore.replace), retried
    # on a fresh read when another change came first; what changes the champion happens only after the change that
    # decided it was written.
    def start(self, experiment_id: str) -> Experiment:
        """Running from now on; starting a serving experiment again changes nothing (a safe retry)."""

        def change(experiment: Experiment) -> Experiment | None:
            if experiment.status in SERVING_STATUSES:
                return None
            if experiment.status != ExperimentStatus.DRAFT:
                raise ExperimentFinishedError(experiment)
            for index, variant in enumerate(experiment.variants):
                if not self.registry.exists(variant.model_version):
                    raise VariantUnavailableError(f"variants.{index}.model_version", variant.model_version)
            self._claim_serving_slot(experiment)
            return experiment.model_copy(update={"status": ExperimentStatus.RUNNING, "started_at": now_iso()})

        started = self._change(experiment_id, change)
        logger.info("experiment started", extra={"experiment_id": experiment_id})
        return started

    def _claim_serving_slot(self, experiment: Experiment) -> None:
        """One experiment serves at a time: claim the slot by a conditional write, unless another holds it."""
        # Read from S3, not the cache: a start a few seconds after another one must see it.
        for serving in self.store.running(use_cache=False):
            if serving.experiment_id != experiment.experiment_id:
                raise ExperimentAlreadyRunningError(serving)
        claim, etag = self.store.slot()
        if claim is not None and claim.experiment_id != experiment.experiment_id:
            self._refuse_if_held(claim)
        if not self.store.claim_slot(experiment.experiment_id, etag):  # another start claimed it since the read
            claim, _ = self.store.slot()
            if claim is None or claim.experiment_id != experiment.experiment_id:
                self._refuse_if_held(claim, always=True)

    def _refuse_if_held(self, claim: SlotClaim | None, *, always: bool = False) -> None:
        holder = None
        if claim is not None:
            try:
                holder = self.store.get(claim.experiment_id)
            except (NotFoundError, ValidationError):  # a claim by an experiment that no longer reads: stale
                holder = None
        starting = (
            holder is not None
            and holder.status == ExperimentStatus.DRAFT
            and claim is not None
            and claim.age_seconds() < SLOT_CLAIM_SECONDS
        )
        if holder is not None and (holder.status in SERVING_STATUSES or starting):
            raise ExperimentAlreadyRunningError(holder)
        if always:
            raise ExperimentBusyError(claim.experiment_id if claim else "serving slot")

    def stop(self, experiment_id: str) -> ExperimentResults:
        """Stop serving the experiment. Decided: concluded with its winner (promoted with auto_promote, unless the
        experiment was to roll its winner out first); else stopped without one. A rollout stopped midway leaves the
        champion as it is. The final results are kept with the definition. Stopping again changes nothing."""

        def change(experiment: Experiment) -> Experiment | None:
            if experiment.status in (ExperimentStatus.STOPPED, ExperimentStatus.CONCLUDED):
                return None
            if experiment.status == ExperimentStatus.ROLLING_OUT:
                return self._end_rollout(experiment, "stopped by an operator", ExperimentStatus.STOPPED)
            results, verdict = self._evaluate(experiment)
            if experiment.status == ExperimentStatus.RUNNING and _winner(verdict) is not None:
                if experiment.auto_promote and not experiment.rollout_stages:
                    return self._concluded(
                        experiment, results, verdict, promote=True, champion=self._champion_version()
                    )
                return self._concluded(experiment, results, verdict)
            reason = "stopped before it started" if experiment.status == ExperimentStatus.DRAFT else verdict.reason
            decision = Decision(
                winning_variant=None,
                reason=f"stopped without a winner: {reason}",
                impressions=results.total_impressions,
            )
            return self._finished(experiment, results, ExperimentStatus.STOPPED, decision)

        return self._results_of(self._complete_promotion(self._change(experiment_id, change)))

    def results(self, experiment_id: str) -> ExperimentResults:
        """The results as of now (a finished experiment: its final results, kept when it finished)."""
        return self._results_of(self.store.get(experiment_id))

    def conclude_if_decided(self, experiment_id: str) -> ExperimentResults:
        """The results, after acting on them. With auto_promote, a decided experiment concludes with its winner
        promoted, or starts rolling it out when it has rollout stages; a rollout stage whose guardrails passed moves
        on (the last one promotes), one whose guardrails failed ends the rollout with the champion unchanged.
        Without auto_promote a decided experiment keeps running until an operator stops it."""

        undecided: dict[str, ExperimentResults] = {}  # the results just evaluated, when nothing was written

        def change(experiment: Experiment) -> Experiment | None:
            undecided.clear()
            if experiment.status == ExperimentStatus.ROLLING_OUT:
                return self._advance_rollout(experiment)
            if experiment.status != ExperimentStatus.RUNNING or not experiment.auto_promote:
                return None
            results, verdict = self._evaluate(experiment)
            winner = _winner(verdict)
            if winner is None:
                undecided[experiment.experiment_id] = results
                return None
            champion = self._champion_version()
            if experiment.rollout_stages and champion not in (None, experiment.variant(winner).model_version):
                return self._begin_rollout(experiment, results, verdict, champion)
            return self._concluded(experiment, results, verdict, promote=True, champion=champion)

        experiment = self._complete_promotion(self._change(experiment_id, change))
        return undecided.get(experiment_id) or self._results_of(experiment)

    def _change(self, experiment_id: str, change: Callable[[Experiment], Experiment | None]) -> Experiment:
        """Apply `change` to the experiment as stored (None from it: nothing to write); a write that lost to another
        change reads the experiment again and decides again."""
        for _ in range(CHANGE_ATTEMPTS):
            experiment, etag = self.store.read(experiment_id)
            changed = change(experiment)
            if changed is None:
                return experiment
            if self.store.replace(changed, etag):
                if changed.status != experiment.status:
                    logger.info(
                        "experiment changed",
                        extra={"experiment_id": experiment_id, "from": experiment.status, "to": changed.status},
                    )
                return changed
        raise ExperimentBusyError(experiment_id)

    def _champion_version(self) -> str | None:
        champion = self.registry.champion(use_cache=False)
        return champion.version if champion is not None else None

    def _concluded(
        self,
        experiment: Experiment,
        results: ExperimentResults,
        verdict: Verdict,
        *,
        promote: bool = False,
        champion: str | None = None,
    ) -> Experiment:
        """The experiment concluded with its winner. With `promote`, the winner's promotion over `champion` (the
        champion read now; None: there is none) is recorded as pending, to be made once this is written
        (_complete_promotion)."""
        winner_name = _winner(verdict)
        assert winner_name is not None
        decision = Decision(
            winning_variant=winner_name,
            reason=f"{winner_name} won at confidence {verdict.confidence:.4f}: {verdict.reason}",
            impressions=results.total_impressions,
            champion_at_decision=champion,
            promotion_pending=promote,
        )
        return self._finished(experiment, results, ExperimentStatus.CONCLUDED, decision)

    def _complete_promotion(self, experiment: Experiment) -> Experiment:
        """Make a concluded experiment's winner champion if that is still pending: by compare-and-swap on the
        champion it was decided against, so an operator's promotion or rollback made meanwhile is never
        overridden. The outcome is recorded in the decision."""
        decision = experiment.decision
        if experiment.status != ExperimentStatus.CONCLUDED or decision is None or not decision.promotion_pending:
            return experiment
        version = (
            experiment.rollout.model_version
            if experiment.rollout is not None
            else experiment.variant(decision.winning_variant or "").model_version
        )
        promoted, outcome = self._promote(experiment, version, decision)

        def record(stored: Experiment) -> Experiment | None:
            if stored.decision is None or not stored.decision.promotion_pending:
                return None  # recorded by a concurrent read
            reason = f"{stored.decision.reason}; {outcome}"
            update = {"promotion_pending": False, "promoted_version": promoted, "reason": reason}
            return stored.model_copy(update={"decision": stored.decision.model_copy(update=update)})

        return self._change(experiment.experiment_id, record)

    def _promote(self, experiment: Experiment, version: str, decision: Decision) -> tuple[str | None, str]:
        """Returns (the version promoted, what happened)."""
        champion = self.registry.champion(use_cache=False)
        current = champion.version if champion is not None else None
        if current == version:
            return version, f"{version} is the champion"
        reason = f"experiment {experiment.experiment_id}: {decision.reason}"[:MAX_PROMOTION_REASON]
        try:
            self.registry.promote(version, reason, expected_current=decision.champion_at_decision)
        except ConcurrentPromotionError as exc:
            logger.warning("winner not promoted", extra={"experiment_id": experiment.experiment_id, "error": str(exc)})
            return None, f"not promoted: {exc}"
        except (CorruptModelError, NotFoundError) as exc:
            logger.error("winner not promoted", extra={"experiment_id": experiment.experiment_id, "error": str(exc)})
            return None, f"not promoted: {exc}"
        logger.info(
            "experiment winner promoted", extra={"experiment_id": experiment.experiment_id, "model_version": version}
        )
        return version, f"{version} promoted to champion (was {decision.champion_at_decision})"

    # The staged rollout of a winner (ExperimentSpec.rollout_stages).
    def _begin_rollout(
        self, experiment: Experiment, results: ExperimentResults, verdict: Verdict, champion_version: str
    ) -> Experiment:
        winner = experiment.variant(_winner(verdict) or "")
        stages = experiment.rollout_stages or [100.0]
        rollout = Rollout(
            winning_variant=winner.name,
            model_version=winner.model_version,
            baseline_version=champion_version,
            stages=stages,
            history=[RolloutStage(share=stages[0])],
        )
        decision = Decision(
            winning_variant=winner.name,
            reason=f"{winner.name} won at confidence {verdict.confidence:.4f}: {verdict.reason}; rolling out to "
            f"{', '.join(f'{share:g}%' for share in stages)} of users, each stage checked by the guardrails",
            impressions=results.total_impressions,
            champion_at_decision=champion_version,
        )
        # The comparison's results are final now; the stages are counted apart.
        final = _with_lifecycle(results, experiment).model_dump(mode="json")
        update = {
            "status": ExperimentStatus.ROLLING_OUT,
            "rollout": rollout,
            "decision": decision,
            "final_results": final,
        }
        return experiment.model_copy(update=update)

    def _advance_rollout(self, experiment: Experiment) -> Experiment | None:
        """The current stage's guardrails decide: gathering (None), halted (the rollout ends, champion unchanged),
        or passed (the next stage; past the last one below 100%, the promotion)."""
        rollout = experiment.rollout
        assert rollout is not None
        check = self._check_stage(experiment)
        if check.passed is None:
            return None
        if not check.passed:
            return self._end_rollout(experiment, f"halted: {check.reason}", ExperimentStatus.CONCLUDED)
        ended = rollout.current.model_copy(update={"ended_at": now_iso(), "outcome": check.reason})
        history = [*rollout.history[:-1], ended]
        if rollout.next_share < 100:
            history.append(RolloutStage(share=rollout.next_share))
            return experiment.model_copy(update={"rollout": rollout.model_copy(update={"history": history})})
        history.append(RolloutStage(share=100.0, ended_at=now_iso(), outcome="promotion"))
        assert experiment.decision is not None
        reason = f"{experiment.decision.reason}; every rollout stage passed"
        update = {
            "status": ExperimentStatus.CONCLUDED,
            "stopped_at": now_iso(),
            "decision": experiment.decision.model_copy(update={"promotion_pending": True, "reason": reason}),
            "rollout": rollout.model_copy(update={"history": history}),
        }
        return experiment.model_copy(update=update)

    def _end_rollout(self, experiment: Experiment, why: str, status: ExperimentStatus) -> Experiment:
        """The rollout ends where it is: the champion stays, the winner's share returns to 0."""
        rollout = experiment.rollout
        assert rollout is not None and experiment.decision is not None
        ended = rollout.current.model_copy(update={"ended_at": now_iso(), "outcome": why})
        reason = f"{experiment.decision.reason}; rollout {why} at {rollout.current.share:g}%: champion unchanged"
        update = {
            "status": status,
            "stopped_at": now_iso(),
            "decision": experiment.decision.model_copy(update={"reason": reason}),
            "rollout": rollout.model_copy(update={"history": [*rollout.history[:-1], ended]}),
        }
        return experiment.model_copy(update=update)

    def _check_stage(self, experiment: Experiment) -> RolloutCheck:
        stage, counts = self._stage_counts(experiment)
        return check_rollout_stage(stage, counts, experiment.guardrails.rollout_stage_impressions)

    def _stage_counts(self, experiment: Experiment) -> tuple[Experiment, dict[str, ArmCounts]]:
        """The current rollout stage as it assigns users, and its arms' counts."""
        stage = experiment.serving()
        return stage, self.counters.counts(experiment.experiment_id, [variant.name for variant in stage.variants])

    def _rollout_results(self, experiment: Experiment) -> RolloutResults | None:
        rollout = experiment.rollout
        if rollout is None:
            return None
        current = None
        stage_arms: list[ArmResult] = []
        check = None
        if experiment.status == ExperimentStatus.ROLLING_OUT:
            stage, counts = self._stage_counts(experiment)
            stage_arms = evaluate(stage, counts, probability_best=False).arms
            current = rollout.current.share
            check = check_rollout_stage(stage, counts, experiment.guardrails.rollout_stage_impressions).reason
        return RolloutResults(**rollout.model_dump(), current_share=current, stage_arms=stage_arms, stage_check=check)

    # Results.
    def _results_of(self, experiment: Experiment) -> ExperimentResults:
        if experiment.final_results is not None:
            results = _with_lifecycle(ExperimentResults.model_validate(experiment.final_results), experiment)
        else:
            results = self._evaluate(experiment)[0]
        rollout = self._rollout_results(experiment)
        return results.model_copy(update={"rollout": rollout}) if rollout is not None else results

    def _finished(
        self, experiment: Experiment, results: ExperimentResults, status: ExperimentStatus, decision: Decision
    ) -> Experiment:
        """The experiment finished with `decision`, its results as of now kept as its final results."""
        finished = experiment.model_copy(update={"status": status, "stopped_at": now_iso(), "decision": decision})
        finished.final_results = _with_lifecycle(results, finished).model_dump(mode="json")
        return finished

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
        raise InvalidInputError(
            "give every variant a weight, or none (equal shares)", field=f"variants.{missing[0]}.weight"
        )
    total = sum(variant.weight or 0.0 for variant in variants)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise InvalidInputError(f"the variants' weights sum to {total:g}; they must sum to 1", field="variants.weight")


def _check_rollout_stages(spec: ExperimentSpec) -> None:
    stages = spec.rollout_stages
    if stages is None:
        return
    if not spec.auto_promote:
        raise InvalidInputError("a rollout needs auto_promote: true", field="rollout_stages")
    for index, share in enumerate(stages):
        if not 0 < share <= 100:
            raise InvalidInputError(
                f"{share:g} is not a percentage of users in (0, 100]", field=f"rollout_stages.{index}"
            )
        if index and share <= stages[index - 1]:
            raise InvalidInputError("the stages must increase", field=f"rollout_stages.{index}")
    if stages[-1] != 100:
        raise InvalidInputError("the last stage must be 100 (the winner serves everyone)", field="rollout_stages")


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
