"""Inside a retrain's SageMaker training job: the container's contract, and the same training as the Lambda branch.

Called by recloop.learning.sagemaker_entry once it runs on Python 3.12 with the pinned requirements. The toolkit's
environment names the folders: SM_CHANNEL_TRAIN (the dataset), SM_CHANNEL_CHAMPION (the champion's bundle files),
SM_MODEL_DIR (what SageMaker uploads as model.tar.gz: the candidate's bundle and candidate.json),
SM_OUTPUT_DATA_DIR (output.tar.gz: candidate.json) and SM_OUTPUT_DIR (`failure`, the job's FailureReason).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from recloop.core.errors import InvalidInputError
from recloop.core.settings import Settings
from recloop.learning.datasets import decode_dataset
from recloop.models.bundle import ModelBundle, ModelKind

CANDIDATE_FILE = "candidate.json"


class TrainingOutcome(BaseModel):
    """candidate.json, written beside the bundle in the model directory: the Lambda branch's Candidate fields."""

    version: str
    kind: ModelKind
    candidate_hr: float
    champion_hr: float | None
    champion_version: str | None
    candidate_metrics: dict[str, float | None]
    champion_metrics: dict[str, float | None] | None


class JobHyperparameters(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: ModelKind
    version: str
    holdout_fraction: float = Field(gt=0, le=0.5)
    champion_version: str | None = Field(None, description="the version to beat on the holdout (its files: champion)")
    parent_version: str | None = Field(None, description="the champion the candidate succeeds")


class ContainerPaths(BaseModel):
    """The container's folders, from the training toolkit's environment (defaults: SageMaker's /opt/ml layout)."""

    train: Path
    champion: Path | None
    model: Path
    output_data: Path
    output: Path

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ContainerPaths:
        if not environ.get("SM_CHANNEL_TRAIN"):
            raise InvalidInputError("SM_CHANNEL_TRAIN is not set: the job has no train channel", field="train")
        champion = environ.get("SM_CHANNEL_CHAMPION")
        return cls(
            train=Path(environ["SM_CHANNEL_TRAIN"]),
            champion=Path(champion) if champion else None,
            model=Path(environ.get("SM_MODEL_DIR", "/opt/ml/model")),
            output_data=Path(environ.get("SM_OUTPUT_DATA_DIR", "/opt/ml/output/data")),
            output=Path(environ.get("SM_OUTPUT_DIR", "/opt/ml/output")),
        )


def run_training_job(environ: Mapping[str, str], hyperparameters: Mapping[str, object]) -> TrainingOutcome:
    """Train as the Lambda branch does, under the container's contract. A failure's message goes to
    <output>/failure, which SageMaker reports as the job's FailureReason (and Step Functions as the cause)."""
    paths = ContainerPaths.from_environ(environ)
    try:
        return _train(paths, JobHyperparameters.model_validate(hyperparameters), Settings.from_env(environ))
    except Exception as exc:
        paths.output.mkdir(parents=True, exist_ok=True)
        (paths.output / "failure").write_text(f"{type(exc).__name__}: {exc}"[:1024])
        raise


def _train(paths: ContainerPaths, params: JobHyperparameters, settings: Settings) -> TrainingOutcome:
    from recloop.learning.training import train_candidate

    events = decode_dataset(_dataset_file(paths.train).read_bytes())
    champion = None
    if params.champion_version:
        if paths.champion is None:
            raise InvalidInputError("the champion's channel is missing", field="champion")
        champion = ModelBundle.from_files(_files_under(paths.champion))
    result = train_candidate(
        params.kind,
        events,
        settings,
        params.version,
        holdout_fraction=params.holdout_fraction,
        champion=champion,
        parent_version=params.parent_version or params.champion_version,
    )
    outcome = TrainingOutcome(
        version=result.bundle.metadata.version,
        kind=params.kind,
        candidate_hr=result.candidate_hr,
        champion_hr=result.champion_hr,
        champion_version=params.champion_version,
        candidate_metrics=result.candidate_metrics,
        champion_metrics=result.champion_metrics,
    )
    files = {**result.bundle.serialised(), CANDIDATE_FILE: outcome.model_dump_json(indent=2).encode()}
    for name, data in files.items():
        (paths.model / name).parent.mkdir(parents=True, exist_ok=True)
        (paths.model / name).write_bytes(data)
    paths.output_data.mkdir(parents=True, exist_ok=True)  # output.tar.gz: the outcome without the model
    (paths.output_data / CANDIDATE_FILE).write_bytes(files[CANDIDATE_FILE])
    print(f"trained {outcome.version} on {len(events)} events: {json.dumps(outcome.candidate_metrics)}", flush=True)
    return outcome


def _dataset_file(channel: Path) -> Path:
    found = sorted(path for path in channel.rglob("*.jsonl.gz") if path.is_file())
    if len(found) != 1:
        raise InvalidInputError(f"the train channel holds {len(found)} .jsonl.gz files, not one", field="train")
    return found[0]


def _files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
