"""The retrain state machine's steps (statemachines/retrain.asl.json), one method each.

    begin -> prepare_dataset -> (train on Lambda | on SageMaker) -> gate -> register -> promote_or_canary -> finish
                                         any failure -> fail (the lock released, the failure in the status)

Step Functions retries a step that failed transiently, so every step may run twice: each one is idempotent. A step
writes what it made under the execution's name (`datasets/<execution>.jsonl.gz`, `candidates/<execution>/...`),
so a retry overwrites its own work and two executions never share any. The candidate is registered only after the
gate passed; what the gate refused stays under `candidates/` for inspection (the bucket's lifecycle expires it).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger
from pydantic import BaseModel, Field

from recloop.core.errors import ConflictError, InvalidInputError
from recloop.core.events import Interaction
from recloop.learning.datasets import decode_dataset, encode_dataset, holdout_start
from recloop.learning.sagemaker_job import TrainingOutcome
from recloop.models.bundle import ModelBundle, ModelKind
from recloop.registry.errors import VersionExistsError
from recloop.registry.versions import new_version_id

if TYPE_CHECKING:
    from recloop.adapters.objects import ObjectStore
    from recloop.core.settings import Settings
    from recloop.experiments.service import ExperimentService
    from recloop.learning.training import CategoriesOf
    from recloop.registry.model_registry import ModelRegistry
    from recloop.retraining.service import RetrainService

logger = Logger(child=True)

DATASETS_PREFIX = "datasets/"
CANDIDATES_PREFIX = "candidates/"
MIN_TRAINING_EVENTS = 100
HOLDOUT_FRACTION = 0.1
MIN_HOLDOUT_EVENTS = 200  # fewer, and HR@10 on them is too noisy to judge by
# The canary: the new version against the champion for this share of users, promoted when it wins.
CANARY_NAME_PREFIX = "canary"


class NotEnoughEventsError(InvalidInputError):
    """The archive holds too little to train on: the run fails, visibly, rather than register a useless model."""

    code = "not_enough_events"


class TrainingTarget(StrEnum):
    LAMBDA = "lambda"  # TrainFunction: 3 GB, 15 minutes
    SAGEMAKER = "sagemaker"  # a training job in the prebuilt scikit-learn container (recloop.learning.sagemaker)


class Dataset(BaseModel):
    dataset_key: str
    events: int
    bytes: int = Field(description="compressed size: what decides where to train")
    train_on: TrainingTarget = TrainingTarget.LAMBDA
    holdout_fraction: float = Field(HOLDOUT_FRACTION, gt=0, le=0.5, description="the latest events kept to judge")
    holdout_start: float | None = Field(
        None, description="unix seconds of the holdout's first event: the champion is judged as it stood before it"
    )


def training_target(size: int, settings: Settings) -> TrainingTarget:
    """SageMaker for a dataset above SAGEMAKER_MIN_DATASET_BYTES where a SageMaker role is configured."""
    if settings.sagemaker_role_arn and size > settings.sagemaker_min_dataset_bytes:
        return TrainingTarget.SAGEMAKER
    return TrainingTarget.LAMBDA


class Candidate(TrainingOutcome):
    """A trained candidate, stored under candidates/<execution>/, and its holdout comparison with the champion
    (the same fields whichever branch trained it: TrainingOutcome is what a SageMaker job writes)."""

    candidate_prefix: str


class GateResult(BaseModel):
    passed: bool
    reason: str


class Deployment(StrEnum):
    PROMOTED = "promoted"  # the new version is champion
    CANARY = "canary"  # an experiment with auto_promote decides
    DEFERRED = "deferred"  # registered only: another experiment serves, an operator decides


class DeploymentResult(BaseModel):
    action: Deployment
    version: str
    experiment_id: str | None = None
    reason: str


def dataset_key(execution_name: str) -> str:
    return f"{DATASETS_PREFIX}{execution_name}.jsonl.gz"


def candidate_prefix(execution_name: str) -> str:
    return f"{CANDIDATES_PREFIX}{execution_name}/"


def write_dataset(objects: ObjectStore, key: str, events: list[Interaction]) -> int:
    """The events as gzipped JSON lines, in time order; the bytes written."""
    data = encode_dataset(events)
    objects.put(key, data, "application/gzip")
    return len(data)


def read_dataset(objects: ObjectStore, key: str) -> list[Interaction]:
    stored = objects.get(key)
    if stored is None:
        raise InvalidInputError(f"dataset {key} does not exist", field="dataset_key")
    return decode_dataset(stored[0])


def store_candidate(objects: ObjectStore, prefix: str, bundle: ModelBundle) -> None:
    for name, data in bundle.serialised().items():
        objects.put(f"{prefix}{name}", data, "application/octet-stream")


def load_candidate(objects: ObjectStore, prefix: str) -> ModelBundle:
    files = {}
    for key in objects.keys(prefix):
        stored = objects.get(key)
        if stored is not None:
            files[key[len(prefix) :]] = stored[0]
    return ModelBundle.from_files(files)


class HoldoutPlan(BaseModel):
    holdout_fraction: float
    holdout_start: float | None


def plan_holdout(
    registry: ModelRegistry, events: Sequence[Interaction], holdout_fraction: float = HOLDOUT_FRACTION
) -> HoldoutPlan:
    """The holdout that judges candidate and champion fairly: the latest `holdout_fraction` of the time-ordered
    events, where some version in the champion's lineage predates it (`champion_baseline` judges that one).

    Soon after a model was trained, every version in the lineage has learned part of that holdout: then the holdout
    is what came after the oldest of them, if that is at least MIN_HOLDOUT_EVENTS. Otherwise no fair holdout exists
    and the champion of the moment, judged on events it has seen, is the bar: the gate errs towards what serves."""
    start = holdout_start(events, holdout_fraction)
    pointer = registry.champion(use_cache=False)
    if pointer is None or start is None:
        return HoldoutPlan(holdout_fraction=holdout_fraction, holdout_start=start)
    oldest_end: float | None = None
    for metadata in registry.lineage(pointer.version):
        oldest_end = metadata.data_window.end
        if oldest_end is not None and oldest_end < start:
            return HoldoutPlan(holdout_fraction=holdout_fraction, holdout_start=start)
    if oldest_end is not None:
        later = len(events) - bisect.bisect_right([e.timestamp for e in events], oldest_end)
        if later >= MIN_HOLDOUT_EVENTS:
            return HoldoutPlan(
                holdout_fraction=later / len(events), holdout_start=events[len(events) - later].timestamp
            )
    return HoldoutPlan(holdout_fraction=holdout_fraction, holdout_start=start)


def champion_baseline(registry: ModelRegistry, holdout_start: float | None) -> tuple[str | None, str | None]:
    """The champion (the candidate's parent) and the version of it the candidate must beat: the champion as it
    stood before the holdout began. The champion of the moment has learned the holdout's events online, and would
    be judged on answers it was taught; both None without a champion."""
    pointer = registry.champion(use_cache=False)
    if pointer is None:
        return None, None
    return pointer.version, registry.as_it_stood(pointer.version, holdout_start)


def gate(candidate: Candidate, min_improvement: float) -> GateResult:
    """The candidate replaces the champion only if it is at least as good on the same holdout (plus a margin)."""
    if candidate.champion_hr is None:
        return GateResult(passed=True, reason=f"no champion to beat; holdout HR@10 {candidate.candidate_hr:.4f}")
    needed = candidate.champion_hr + min_improvement
    verdict = "passed" if candidate.candidate_hr >= needed else "refused"
    return GateResult(
        passed=candidate.candidate_hr >= needed,
        reason=f"{verdict}: holdout HR@10 {candidate.candidate_hr:.4f} vs the champion's "
        f"{candidate.champion_hr:.4f} (as it stood before the holdout: {candidate.champion_version}), "
        f"needs >= {needed:.4f}",
    )


class RetrainWorkflow:
    def __init__(
        self,
        retraining: RetrainService,
        objects: ObjectStore,
        registry: ModelRegistry,
        experiments: ExperimentService,
        settings: Settings,
        *,
        categories_of: CategoriesOf | None = None,
    ) -> None:
        self.retraining = retraining
        self.objects = objects
        self.registry = registry
        self.experiments = experiments
        self.settings = settings
        self.categories_of = categories_of  # the items' categories, for the candidate's drift reference

    def prepare_dataset(self, execution_name: str, events: list[Interaction]) -> Dataset:
        """Write the de-duplicated, time-ordered archive the run trains on; NotEnoughEventsError if too small."""
        if len(events) < MIN_TRAINING_EVENTS:
            raise NotEnoughEventsError(
                f"the archive holds {len(events)} events; training needs at least {MIN_TRAINING_EVENTS}",
                events=len(events),
            )
        key = dataset_key(execution_name)
        size = write_dataset(self.objects, key, events)
        target = training_target(size, self.settings)
        logger.info(
            "dataset prepared", extra={"dataset_key": key, "events": len(events), "bytes": size, "train_on": target}
        )
        plan = plan_holdout(self.registry, events)
        return Dataset(dataset_key=key, events=len(events), bytes=size, train_on=target, **plan.model_dump())

    def train(self, execution_name: str, dataset: Dataset, kind: ModelKind) -> Candidate:
        """Train on the dataset, compare with the champion as it stood before the holdout, store the candidate."""
        from recloop.learning.training import train_candidate

        events = read_dataset(self.objects, dataset.dataset_key)
        parent, baseline = champion_baseline(self.registry, dataset.holdout_start)
        result = train_candidate(
            kind,
            events,
            self.settings,
            new_version_id(kind),
            holdout_fraction=dataset.holdout_fraction,
            champion=self.registry.load(baseline) if baseline is not None else None,
            parent_version=parent,
            categories_of=self.categories_of,
        )
        prefix = candidate_prefix(execution_name)
        store_candidate(self.objects, prefix, result.bundle)
        return Candidate(
            candidate_prefix=prefix,
            version=result.bundle.metadata.version,
            kind=kind,
            candidate_hr=result.candidate_hr,
            champion_hr=result.champion_hr,
            champion_version=baseline,
            candidate_metrics=result.candidate_metrics,
            champion_metrics=result.champion_metrics,
        )

    def register(self, candidate: Candidate) -> str:
        """Register the candidate's version (again after a retry: the version is already there, unchanged)."""
        bundle = load_candidate(self.objects, candidate.candidate_prefix)
        try:
            self.registry.register(bundle)
        except VersionExistsError:
            if not self.registry.exists(candidate.version):
                raise
        return candidate.version

    def promote_or_canary(self, candidate: Candidate, execution_name: str) -> DeploymentResult:
        """With no champion, promote. Otherwise start a canary experiment with auto_promote: the new version earns
        its place on live traffic. If another experiment serves, the version stays registered for an operator."""
        version = candidate.version
        pointer = self.registry.champion(use_cache=False)
        reason = f"{execution_name}: holdout HR@10 {candidate.candidate_hr:.4f} vs {candidate.champion_hr}"
        if pointer is None or self.settings.retrain_deployment == "promote":
            if pointer is None or pointer.version != version:
                self.registry.promote(version, reason, expected_current=pointer.version if pointer else None)
            return DeploymentResult(action=Deployment.PROMOTED, version=version, reason=reason)
        existing = self._canary_of(execution_name)
        if existing is not None:  # a retried step: the canary it started
            return DeploymentResult(action=Deployment.CANARY, version=version, experiment_id=existing, reason=reason)
        from recloop.experiments.service import ExperimentSpec, VariantSpec

        spec = ExperimentSpec(
            name=f"{CANARY_NAME_PREFIX} {execution_name}",
            description=f"{version} (retrained: {reason}) against the champion {pointer.version}",
            variants=[
                VariantSpec(name="champion", model_version=pointer.version),
                VariantSpec(name="challenger", model_version=version),
            ],
            traffic_percentage=self.settings.canary_traffic_percentage,
            auto_promote=True,
        )
        experiment = self.experiments.create(spec)
        try:
            self.experiments.start(experiment.experiment_id)
        except ConflictError as exc:  # another experiment serves: the canary waits for an operator
            self.experiments.stop(experiment.experiment_id)
            return DeploymentResult(
                action=Deployment.DEFERRED, version=version, reason=f"registered, canary not started: {exc}"
            )
        return DeploymentResult(
            action=Deployment.CANARY, version=version, experiment_id=experiment.experiment_id, reason=reason
        )

    def _canary_of(self, execution_name: str) -> str | None:
        name = f"{CANARY_NAME_PREFIX} {execution_name}"
        for experiment in self.experiments.list():
            if experiment.name == name and experiment.status.value in ("running", "rolling_out", "concluded"):
                return experiment.experiment_id
        return None
