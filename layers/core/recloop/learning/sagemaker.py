"""A retrain's candidate trained in a SageMaker training job: the image, the request, the source, the output.

No AWS calls here. The retrain's `build_training_job` step (recloop.retraining.training_jobs) uploads the source
archive and hands `training_job_request` to Step Functions' createTrainingJob.sync; the job runs the same
`train_candidate` as the Lambda branch (recloop.learning.sagemaker_entry, then recloop.learning.sagemaker_job,
inside the container); `collect_training_job` reads the job's model.tar.gz back with `read_model_artifact`.

    s3://<bucket>/sagemaker/source/<sha256>.tar.gz               the source archive, one per code version
    s3://<bucket>/sagemaker/<execution>/<job>/output/model.tar.gz  the job's model directory: bundle + candidate.json
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from recloop.core.errors import InvalidInputError
from recloop.core.settings import Settings
from recloop.learning.sagemaker_entry import ENTRY_SCRIPT, REQUIREMENTS_FILE
from recloop.learning.sagemaker_job import CANDIDATE_FILE, JobHyperparameters, TrainingOutcome
from recloop.models.bundle import CorruptModelError, ModelBundle
from recloop.registry.versions import ModelVersions

SAGEMAKER_PREFIX = "sagemaker/"
SOURCE_PREFIX = f"{SAGEMAKER_PREFIX}source/"
# SageMaker's prebuilt scikit-learn training image. Its 1.4-2-py312 variant runs Python 3.12, so the entry point
# only installs the pins; with an older image (SAGEMAKER_TRAINING_IMAGE) it bootstraps Python 3.12 first.
SKLEARN_FRAMEWORK_VERSION = "1.4-2-py312"
SKLEARN_REPOSITORY = "sagemaker-scikit-learn"
# The image's registry account per region, from the SageMaker Python SDK's image_uri_config/sklearn.json (the
# same for every framework version). Air-gapped partitions are left out: the entry point needs PyPI.
SKLEARN_IMAGE_ACCOUNTS = {
    "af-south-1": "510948584623",
    "ap-east-1": "651117190479",
    "ap-northeast-1": "354813040037",
    "ap-northeast-2": "366743142698",
    "ap-northeast-3": "867004704886",
    "ap-south-1": "720646828776",
    "ap-south-2": "628508329040",
    "ap-southeast-1": "121021644041",
    "ap-southeast-2": "783357654285",
    "ap-southeast-3": "951798379941",
    "ap-southeast-4": "106583098589",
    "ca-central-1": "341280168497",
    "ca-west-1": "190319476487",
    "cn-north-1": "450853457545",
    "cn-northwest-1": "451049120500",
    "eu-central-1": "492215442770",
    "eu-central-2": "680994064768",
    "eu-north-1": "662702820516",
    "eu-south-1": "978288397137",
    "eu-south-2": "104374241257",
    "eu-west-1": "141502667606",
    "eu-west-2": "764974769150",
    "eu-west-3": "659782779980",
    "il-central-1": "898809789911",
    "me-central-1": "272398656194",
    "me-south-1": "801668240914",
    "sa-east-1": "737474898029",
    "us-east-1": "683313688378",
    "us-east-2": "257758044811",
    "us-gov-east-1": "237065988967",
    "us-gov-west-1": "414596584902",
    "us-west-1": "746614075791",
    "us-west-2": "246618743249",
}
# What the training code imports, at the versions of the Lambda layers (layers/*/requirements.txt). redis: the
# offline replay's feature store shares its client module with the live one.
TRAINING_REQUIREMENTS = (
    "aws-lambda-powertools==3.37.0",
    "pydantic==2.14.4",
    "redis==8.1.0",
    "numpy==2.5.5",
    "scipy==1.18.1",
    "lightgbm==4.7.0",
    "narwhals==2.29.0",
)
# The settings that shape what training learns (features and their replay), passed to the job's environment so
# that both branches train alike. Infrastructure settings (Redis, secrets, the bucket) stay out of the job.
TRAINING_SETTINGS = (
    "popularity_half_life_hours",
    "trending_half_life_hours",
    "recent_items_cap",
    "cooccurrence_window",
    "cooccurrence_cap",
    "popularity_prior_weight",
    "attribution_window_seconds",
    "max_recommendations",
    "deduplication_window_hours",
    "stream_retention_hours",
)
# The archive's top-level script, what SageMaker runs (sagemaker_program).
LAUNCHER = '''"""RecLoop's retrain, in a SageMaker training job (recloop/learning/sagemaker_entry.py)."""
import sys

from recloop.learning.sagemaker_entry import main

sys.exit(main(sys.argv))
'''
JOB_NAME_LENGTH = 63
_NOT_IN_JOB_NAME = re.compile(r"[^a-zA-Z0-9-]+")


class SageMakerNotConfiguredError(InvalidInputError):
    """The retrain chose SageMaker, but this deployment has no role for its training jobs."""

    code = "sagemaker_not_configured"


# ---- the image and the request --------------------------------------------------------------------------------------


def training_image(region: str, override: str = "") -> str:
    """The prebuilt scikit-learn training image of `region`, unless SAGEMAKER_TRAINING_IMAGE names another."""
    if override:
        return override
    account = SKLEARN_IMAGE_ACCOUNTS.get(region)
    if account is None:
        raise InvalidInputError(
            f"no prebuilt scikit-learn image is known for {region}; set SAGEMAKER_TRAINING_IMAGE",
            field="SAGEMAKER_TRAINING_IMAGE",
        )
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{domain}/{SKLEARN_REPOSITORY}:{SKLEARN_FRAMEWORK_VERSION}-cpu-py3"


def training_job_name(prefix: str, execution_name: str) -> str:
    """`<prefix>-<execution>` as SageMaker allows it: letters, digits and '-', at most 63 characters. A longer
    name keeps its start and ends in a hash of the whole, so two executions never share a job name."""
    name = _NOT_IN_JOB_NAME.sub("-", f"{prefix}-{execution_name}").strip("-")
    if len(name) <= JOB_NAME_LENGTH:
        return name
    digest = hashlib.sha256(execution_name.encode()).hexdigest()[:8]
    return f"{name[: JOB_NAME_LENGTH - len(digest) - 1].rstrip('-')}-{digest}"


def output_path(bucket: str, execution_name: str) -> str:
    return f"s3://{bucket}/{SAGEMAKER_PREFIX}{execution_name}/"


def training_environment(settings: Settings) -> dict[str, str]:
    values = settings.model_dump(include=set(TRAINING_SETTINGS), by_alias=True)
    return {"PYTHONUNBUFFERED": "1", **{name: str(value) for name, value in sorted(values.items())}}


def training_job_request(
    settings: Settings,
    *,
    execution_name: str,
    dataset_key: str,
    source_key: str,
    hyperparameters: JobHyperparameters,
) -> dict[str, Any]:
    """A CreateTrainingJob request: the dataset as the `train` channel, the champion's version as `champion` (its
    holdout comparison runs in the job), the model directory to s3://<bucket>/sagemaker/<execution>/."""
    if not settings.sagemaker_role_arn:
        raise SageMakerNotConfiguredError("training on SageMaker needs SAGEMAKER_ROLE_ARN", field="SAGEMAKER_ROLE_ARN")
    bucket = settings.bucket_name
    channels = [_channel("train", f"s3://{bucket}/{dataset_key}")]
    if hyperparameters.champion_version:
        champion = ModelVersions.version_prefix(hyperparameters.champion_version)
        channels.append(_channel("champion", f"s3://{bucket}/{champion}"))
    # JSON-encoded like the SageMaker SDK's: the toolkit decodes each value, so strings stay strings.
    values = {
        "sagemaker_program": ENTRY_SCRIPT,
        "sagemaker_submit_directory": f"s3://{bucket}/{source_key}",
        "sagemaker_region": settings.aws_region,
        **hyperparameters.model_dump(mode="json", exclude_none=True),
    }
    return {
        "TrainingJobName": training_job_name(settings.sagemaker_job_name_prefix, execution_name),
        "AlgorithmSpecification": {
            "TrainingImage": training_image(settings.aws_region, settings.sagemaker_training_image),
            "TrainingInputMode": "File",
        },
        "RoleArn": settings.sagemaker_role_arn,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": output_path(bucket, execution_name)},
        # One instance: training is one process (more would each train the same model).
        "ResourceConfig": {
            "InstanceType": settings.sagemaker_instance_type,
            "InstanceCount": 1,
            "VolumeSizeInGB": settings.sagemaker_volume_size_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.sagemaker_max_runtime_seconds},
        "HyperParameters": {name: json.dumps(value) for name, value in values.items()},
        "Environment": training_environment(settings),
    }


def _channel(name: str, uri: str) -> dict[str, Any]:
    source = {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}
    return {"ChannelName": name, "DataSource": {"S3DataSource": source}, "InputMode": "File"}


# ---- the source archive ---------------------------------------------------------------------------------------------


def running_package_root() -> Path:
    """The folder holding the running `recloop` package: /opt/python in a Lambda, layers/core in the repository."""
    return Path(__file__).resolve().parents[2]


def source_archive(package_root: Path) -> bytes:
    """sourcedir.tar.gz: the launcher, the pins and the `recloop` package under `package_root`. The same code
    gives the same bytes (sorted entries, no times or owners), so its hash names one code version."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        _add(archive, ENTRY_SCRIPT, LAUNCHER.encode())
        _add(archive, REQUIREMENTS_FILE, "".join(f"{pin}\n" for pin in TRAINING_REQUIREMENTS).encode())
        package = package_root / "recloop"
        for path in sorted(package.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                _add(archive, path.relative_to(package_root).as_posix(), path.read_bytes())
    return buffer.getvalue()


def source_key(archive: bytes) -> str:
    return f"{SOURCE_PREFIX}{hashlib.sha256(archive).hexdigest()}.tar.gz"


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


# ---- the job's output -----------------------------------------------------------------------------------------------


def read_model_artifact(data: bytes) -> tuple[ModelBundle, TrainingOutcome]:
    """The bundle and candidate.json of a job's model.tar.gz; CorruptModelError if either is missing or altered."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member in archive:
                name = PurePosixPath(member.name)
                if not member.isfile():
                    continue
                if name.is_absolute() or ".." in name.parts:
                    raise CorruptModelError(f"model.tar.gz holds {member.name!r}, outside the model directory")
                extracted = archive.extractfile(member)
                files[name.as_posix()] = extracted.read() if extracted else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CorruptModelError(f"model.tar.gz is unreadable: {exc}") from exc
    if CANDIDATE_FILE not in files:
        raise CorruptModelError(f"model.tar.gz holds no {CANDIDATE_FILE}")
    outcome = TrainingOutcome.model_validate_json(files.pop(CANDIDATE_FILE))
    bundle = ModelBundle.from_files(files)
    if bundle.metadata.version != outcome.version:
        raise CorruptModelError(f"{CANDIDATE_FILE} names {outcome.version}, the bundle {bundle.metadata.version}")
    return bundle, outcome
