"""The retrain's SageMaker branch: for a dataset too large for TrainFunction, a training job trains the candidate.

    BuildTrainingJob (`build`) -> sagemaker:createTrainingJob.sync -> CollectTrainingJob (`collect`) -> Candidate

`build` uploads the code as the job's source (once per code version) and returns the CreateTrainingJob request that
the state machine passes on; the job runs the same `train_candidate` as the Lambda branch, against the champion of
the moment, on the same dataset (recloop.learning.sagemaker). `collect` reads the job's model.tar.gz and stores the
candidate under candidates/<execution>/ exactly as the Lambda branch does, so gate, register and deploy are shared.
Both steps may run twice (Step Functions retries): `build` names the job after the execution and makes a new version
id, `collect` overwrites its own candidate files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict

from recloop.core.errors import InvalidInputError
from recloop.learning.sagemaker import (
    SAGEMAKER_PREFIX,
    read_model_artifact,
    running_package_root,
    source_archive,
    source_key,
    training_job_request,
)
from recloop.learning.sagemaker_job import JobHyperparameters
from recloop.models.bundle import ModelKind
from recloop.registry.versions import new_version_id
from recloop.retraining.workflow import Candidate, Dataset, candidate_prefix, champion_baseline, store_candidate

if TYPE_CHECKING:
    from recloop.adapters.objects import ObjectStore
    from recloop.core.settings import Settings
    from recloop.registry.model_registry import ModelRegistry

logger = Logger(child=True)

COMPLETED = "Completed"


class TrainingJobFailedError(InvalidInputError):
    """The training job did not complete, or left no readable model artifact where it should."""

    code = "training_job_failed"


class TrainingJob(BaseModel):
    """What `build` made: the job's request (passed field by field to createTrainingJob) and what it will train."""

    job_name: str
    version: str
    kind: ModelKind
    champion_version: str | None
    source_key: str
    request: dict[str, Any]


class JobModelArtifacts(BaseModel):
    model_config = ConfigDict(extra="ignore")

    S3ModelArtifacts: str  # SageMaker's field names


class TrainingJobResult(BaseModel):
    """The part of createTrainingJob.sync's result (DescribeTrainingJob) that `collect` reads."""

    model_config = ConfigDict(extra="ignore")

    TrainingJobStatus: str
    ModelArtifacts: JobModelArtifacts | None = None
    FailureReason: str | None = None


class SageMakerTraining:
    def __init__(
        self,
        objects: ObjectStore,
        registry: ModelRegistry,
        settings: Settings,
        package_root: Path | None = None,
    ) -> None:
        self.objects = objects
        self.registry = registry
        self.settings = settings
        self.package_root = package_root or running_package_root()

    def build(self, execution_name: str, dataset: Dataset, kind: ModelKind) -> TrainingJob:
        """The training job's request; the source archive uploaded if this code version has none yet."""
        if not self.objects.exists(dataset.dataset_key):
            raise InvalidInputError(f"dataset {dataset.dataset_key} does not exist", field="dataset_key")
        archive = source_archive(self.package_root)
        key = source_key(archive)
        if self.objects.put_if_absent(key, archive, "application/gzip"):
            logger.info("training source uploaded", extra={"source_key": key, "bytes": len(archive)})
        parent, baseline = champion_baseline(self.registry, dataset.holdout_start)
        params = JobHyperparameters(
            kind=kind,
            version=new_version_id(kind),
            holdout_fraction=dataset.holdout_fraction,
            champion_version=baseline,
            parent_version=parent,
        )
        request = training_job_request(
            self.settings,
            execution_name=execution_name,
            dataset_key=dataset.dataset_key,
            source_key=key,
            hyperparameters=params,
        )
        return TrainingJob(
            job_name=request["TrainingJobName"],
            version=params.version,
            kind=kind,
            champion_version=params.champion_version,
            source_key=key,
            request=request,
        )

    def collect(self, execution_name: str, job: TrainingJob, result: TrainingJobResult) -> Candidate:
        """The job's candidate, stored under candidates/<execution>/ as the Lambda branch stores its own."""
        if result.TrainingJobStatus != COMPLETED or result.ModelArtifacts is None:
            reason = f": {result.FailureReason}" if result.FailureReason else ""
            raise TrainingJobFailedError(f"training job {job.job_name} is {result.TrainingJobStatus}{reason}")
        key = self._artifact_key(execution_name, result.ModelArtifacts.S3ModelArtifacts)
        stored = self.objects.get(key)
        if stored is None:
            raise TrainingJobFailedError(f"training job {job.job_name} left no {key}", field="ModelArtifacts")
        bundle, outcome = read_model_artifact(stored[0])
        if outcome.version != job.version:
            raise TrainingJobFailedError(f"{key} holds {outcome.version}, not {job.version}", field="ModelArtifacts")
        prefix = candidate_prefix(execution_name)
        store_candidate(self.objects, prefix, bundle)
        logger.info("training job collected", extra={"job_name": job.job_name, "version": outcome.version})
        return Candidate(candidate_prefix=prefix, **outcome.model_dump())

    def _artifact_key(self, execution_name: str, uri: str) -> str:
        """The object key of a model artifact the job wrote under its output path in this bucket, or refused."""
        bucket_uri = f"s3://{self.settings.bucket_name}/"
        key = uri.removeprefix(bucket_uri)
        if key == uri or not key.startswith(f"{SAGEMAKER_PREFIX}{execution_name}/"):
            raise TrainingJobFailedError(
                f"{uri} is not under the job's output path {bucket_uri}{SAGEMAKER_PREFIX}{execution_name}/",
                field="ModelArtifacts",
            )
        return key
