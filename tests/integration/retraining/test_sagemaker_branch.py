"""The retrain's SageMaker branch over moto S3 and a real Redis: build_training_job's request, the training job
emulated on this machine under SageMaker's container contract (tests/support/sagemaker.py), collect_training_job.
The candidate it returns is the one the Lambda branch returns for the same dataset and champion."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import redis

from local.inprocess import LambdaContext
from recloop.adapters.objects import ObjectStore
from recloop.container import get_container
from recloop.core.settings import Settings
from recloop.handlers.workflow import handle_task
from recloop.learning.datasets import load_events
from recloop.learning.sagemaker import SageMakerNotConfiguredError
from recloop.learning.sagemaker_job import CANDIDATE_FILE, TrainingOutcome, run_training_job
from recloop.models.bundle import DataWindow, ModelBundle, ModelKind, ModelMetadata
from recloop.models.loading import load_model
from recloop.registry.model_registry import ModelRegistry
from recloop.retraining.training_jobs import SageMakerTraining, TrainingJobFailedError, TrainingJobResult
from recloop.retraining.workflow import Dataset, RetrainWorkflow, dataset_key, load_candidate, write_dataset
from tests.support.environment import ROOT, TEST_BUCKET
from tests.support.learning import champion, trained
from tests.support.sagemaker import run_training_job as run_emulated_job

MOVIETWEETINGS = ROOT.parent / "shared" / "data" / "movietweetings-100k"
EXECUTION = "retrain-manual-20261201T120000Z"
ROLE = "arn:aws:iam::123456789012:role/recloop-sagemaker-training"


@pytest.fixture
def objects(aws: dict[str, Any]) -> ObjectStore:
    return ObjectStore(aws["s3"], TEST_BUCKET)


@pytest.fixture
def registry(objects: ObjectStore, redis_client: redis.Redis) -> ModelRegistry:
    return ModelRegistry(objects, redis_client)


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env({"BUCKET_NAME": TEST_BUCKET, "SAGEMAKER_ROLE_ARN": ROLE, "POPULARITY_CACHE_SECONDS": "0"})


@pytest.fixture
def training(objects: ObjectStore, registry: ModelRegistry, settings: Settings) -> SageMakerTraining:
    return SageMakerTraining(objects, registry, settings)


@pytest.fixture
def dataset(objects: ObjectStore) -> Dataset:
    events = load_events(MOVIETWEETINGS, limit=1500)
    key = dataset_key(EXECUTION)
    return Dataset(dataset_key=key, events=len(events), bytes=write_dataset(objects, key, events))


def test_a_training_job_trains_the_candidate_the_lambda_branch_trains(
    aws: dict[str, Any], training: SageMakerTraining, dataset: Dataset, tmp_path: Path
) -> None:
    objects, registry = training.objects, training.registry
    champion(registry)
    job = training.build(EXECUTION, dataset, ModelKind.MF)
    assert objects.exists(job.source_key)
    assert job.champion_version == "mf-online-test-0"

    emulated = run_emulated_job(job.request, aws["s3"], tmp_path)
    assert emulated.process.returncode == 0, emulated.process.stderr[-3000:]
    assert emulated.failure is None
    assert "bootstrap:" not in emulated.process.stdout  # Python 3.12 with the pins: trained in place

    on_sagemaker = training.collect(EXECUTION, job, TrainingJobResult.model_validate(emulated.describe()))
    workflow = RetrainWorkflow(None, objects, registry, None, training.settings)  # type: ignore[arg-type]  # train only
    on_lambda = workflow.train(EXECUTION, dataset, ModelKind.MF)

    assert on_sagemaker.version == job.version != on_lambda.version
    assert on_sagemaker.model_dump(exclude={"version"}) == on_lambda.model_dump(exclude={"version"})
    assert on_sagemaker.champion_hr is not None

    # The version the job trained: stored as the Lambda branch stores its own, registered and loaded alike.
    lambda_version_files = set(load_candidate(objects, on_lambda.candidate_prefix).files)
    registry.register(ModelBundle.from_files(_files(emulated.model_dir)))
    loaded = load_model(registry.load(job.version))
    assert loaded is not None and set(registry.load(job.version).files) == lambda_version_files


def test_the_job_reports_why_it_failed(
    aws: dict[str, Any], objects: ObjectStore, training: SageMakerTraining, tmp_path: Path
) -> None:
    broken = Dataset(dataset_key=dataset_key(EXECUTION), events=0, bytes=0)
    objects.put(broken.dataset_key, b"not gzip", "application/gzip")
    job = training.build(EXECUTION, broken, ModelKind.MF)
    emulated = run_emulated_job(job.request, aws["s3"], tmp_path)
    assert emulated.process.returncode != 0
    assert emulated.failure is not None and emulated.failure.startswith("BadGzipFile: Not a gzipped file")

    with pytest.raises(TrainingJobFailedError, match="is Failed: BadGzipFile"):
        training.collect(EXECUTION, job, TrainingJobResult.model_validate(emulated.describe()))


def test_the_entry_point_needs_its_train_channel(tmp_path: Path) -> None:
    hyperparameters = {"kind": "mf", "version": "mf-x", "holdout_fraction": "0.1"}
    environ = {"SM_CHANNEL_TRAIN": str(tmp_path / "train"), "SM_OUTPUT_DIR": str(tmp_path / "output")}
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match=r"holds 0 \.jsonl\.gz files"):
        run_training_job(environ, hyperparameters)
    assert (tmp_path / "output" / "failure").read_text().startswith("InvalidInputError")


def test_collect_refuses_an_artifact_outside_the_jobs_output_path(
    training: SageMakerTraining, dataset: Dataset
) -> None:
    job = training.build(EXECUTION, dataset, ModelKind.MF)
    elsewhere = f"s3://{TEST_BUCKET}/sagemaker/retrain-other/{job.job_name}/output/model.tar.gz"
    result = TrainingJobResult.model_validate(
        {"TrainingJobStatus": "Completed", "ModelArtifacts": {"S3ModelArtifacts": elsewhere}}
    )
    with pytest.raises(TrainingJobFailedError, match="not under the job's output path"):
        training.collect(EXECUTION, job, result)


def test_collect_refuses_an_artifact_of_another_version(
    objects: ObjectStore, training: SageMakerTraining, dataset: Dataset
) -> None:
    job = training.build(EXECUTION, dataset, ModelKind.MF)
    key = f"sagemaker/{EXECUTION}/{job.job_name}/output/model.tar.gz"
    objects.put(key, _artifact_of("popularity-other"), "application/gzip")
    result = {"TrainingJobStatus": "Completed", "ModelArtifacts": {"S3ModelArtifacts": f"s3://{TEST_BUCKET}/{key}"}}
    with pytest.raises(TrainingJobFailedError, match=f"holds popularity-other, not {job.version}"):
        training.collect(EXECUTION, job, TrainingJobResult.model_validate(result))


def test_build_needs_the_role_and_the_dataset(objects: ObjectStore, registry: ModelRegistry, dataset: Dataset) -> None:
    unconfigured = SageMakerTraining(objects, registry, Settings.from_env({"BUCKET_NAME": TEST_BUCKET}))
    with pytest.raises(SageMakerNotConfiguredError) as refused:
        unconfigured.build(EXECUTION, dataset, ModelKind.MF)
    assert refused.value.details == {"field": "SAGEMAKER_ROLE_ARN"}

    configured = SageMakerTraining(
        objects, registry, Settings.from_env({"BUCKET_NAME": TEST_BUCKET, "SAGEMAKER_ROLE_ARN": ROLE})
    )
    missing = dataset.model_copy(update={"dataset_key": dataset_key("retrain-manual-20261130T0000Z")})
    with pytest.raises(ValueError, match="does not exist"):
        configured.build(EXECUTION, missing, ModelKind.MF)


def test_the_workflow_function_runs_both_steps(
    aws: dict[str, Any], dataset: Dataset, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SAGEMAKER_ROLE_ARN", ROLE)
    built = handle_task(
        {"task": "build_training_job", "execution_name": EXECUTION, "dataset": dataset.model_dump(), "kind": "mf"},
        LambdaContext(),
    )
    request = built["request"]
    assert request["TrainingJobName"] == f"recloop-{EXECUTION}"
    assert request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == (
        f"s3://{TEST_BUCKET}/{dataset.dataset_key}"
    )
    assert [channel["ChannelName"] for channel in request["InputDataConfig"]] == ["train"]  # no champion yet
    assert "champion_version" not in request["HyperParameters"]

    emulated = run_emulated_job(request, aws["s3"], tmp_path)
    assert emulated.process.returncode == 0, emulated.process.stderr[-3000:]
    collected = handle_task(
        {
            "task": "collect_training_job",
            "execution_name": EXECUTION,
            "training_job": built,
            "job": emulated.describe(),
        },
        LambdaContext(),
    )
    assert collected["version"] == built["version"]
    assert collected["champion_version"] is None and collected["champion_metrics"] is None
    assert collected["candidate_prefix"] == f"candidates/{EXECUTION}/"
    assert load_candidate(get_container().objects, collected["candidate_prefix"]).metadata.version == built["version"]


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != CANDIDATE_FILE
    }


def _artifact_of(version: str) -> bytes:
    """A model.tar.gz holding a valid popularity bundle and its candidate.json."""
    from recloop.models.bundle import ModelMetadata

    bundle = ModelBundle(ModelMetadata(version=version, kind=ModelKind.POPULARITY), {})
    outcome = TrainingOutcome(
        version=version,
        kind=ModelKind.POPULARITY,
        candidate_hr=0.1,
        champion_hr=None,
        champion_version=None,
        candidate_metrics={"hr_at_10": 0.1},
        champion_metrics=None,
    )
    files = {**bundle.serialised(), CANDIDATE_FILE: outcome.model_dump_json().encode()}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_both_branches_judge_the_champion_as_it_stood_before_the_holdout(
    objects: ObjectStore, registry: ModelRegistry, training: SageMakerTraining
) -> None:
    """The champion published an online update that learned the holdout's events: the candidate is compared with
    its parent, which had not seen them, and still succeeds the champion of the moment."""
    events = load_events(MOVIETWEETINGS, limit=1500)
    workflow = RetrainWorkflow(None, objects, registry, None, training.settings)  # type: ignore[arg-type]  # train only
    dataset = workflow.prepare_dataset(EXECUTION, events)
    assert dataset.holdout_start == events[int(len(events) * 0.9)].timestamp

    model, _ = trained()
    learned = [
        ("mf-online-test-0", None, dataset.holdout_start - 1),
        ("mf-online-test-1", "mf-online-test-0", events[-1].timestamp),
    ]
    for version, parent, end in learned:
        window = DataWindow(start=events[0].timestamp, end=end)
        registry.register(
            model.to_bundle(
                ModelMetadata(version=version, kind=ModelKind.MF, parent_version=parent, data_window=window)
            )
        )
    registry.promote("mf-online-test-1", reason="an online update")

    job = training.build(EXECUTION, dataset, ModelKind.MF)
    assert job.champion_version == "mf-online-test-0"
    assert json.loads(job.request["HyperParameters"]["parent_version"]) == "mf-online-test-1"

    candidate = workflow.train(EXECUTION, dataset, ModelKind.MF)
    assert candidate.champion_version == "mf-online-test-0"
    assert load_candidate(objects, candidate.candidate_prefix).metadata.parent_version == "mf-online-test-1"
