"""A SageMaker training job emulated on this machine: what the service and its training toolkit do around the
container's entry point, from a CreateTrainingJob request, over moto S3.

- the source: `sagemaker_submit_directory` downloaded and unpacked into <opt>/code;
- each channel: the objects under its S3Prefix into <opt>/input/data/<channel>/ (paths after the prefix's folder);
- the toolkit's environment: SM_CHANNEL_<NAME>, SM_MODEL_DIR, SM_OUTPUT_DATA_DIR, SM_OUTPUT_DIR, SM_HPS (each
  hyperparameter JSON-decoded, as the toolkit decodes it) and the request's Environment;
- `python <sagemaker_program> --name value ...` in <opt>/code, with only the pinned requirements importable (the
  environment the entry point's bootstrap makes: other installed packages are hidden from it);
- the model directory, tarred, to <S3OutputPath><job>/output/model.tar.gz.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.environment import ROOT

# Run at the start of the job's Python (as sitecustomize): only the standard library, `recloop` and the
# distributions the pins install (with their dependencies, extras left out) can be imported.
PINNED_ONLY = """
import re
import sys
from importlib import metadata
from pathlib import Path


def _name(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_by(pins):
    names, todo = set(), [pin.split("==")[0] for pin in pins]
    while todo:
        name = _name(todo.pop())
        if name not in names:
            names.add(name)
            needed = [r for r in metadata.requires(name) or [] if "extra ==" not in r]
            todo += [re.match(r"[A-Za-z0-9_.-]+", r).group() for r in needed]
    return names


class PinnedOnly:
    def __init__(self, pins):
        self.allowed = _installed_by(pins)
        self.owners = metadata.packages_distributions()

    def find_spec(self, name, path=None, target=None):
        owners = {_name(d) for d in self.owners.get(name, [])}
        if path is None and name != "recloop" and owners and not owners & self.allowed:
            raise ModuleNotFoundError(f"No module named {name!r} (not among the pinned requirements)", name=name)
        return None


_pins = [line.strip() for line in Path("training-requirements.txt").read_text().splitlines() if line.strip()]
sys.meta_path.insert(0, PinnedOnly(_pins))
"""


@dataclass
class EmulatedJob:
    opt: Path
    process: subprocess.CompletedProcess[str]
    model_artifact: str | None  # s3:// URI of model.tar.gz, when the job completed

    @property
    def model_dir(self) -> Path:
        return self.opt / "model"

    @property
    def failure(self) -> str | None:
        path = self.opt / "output" / "failure"
        return path.read_text() if path.exists() else None

    def describe(self) -> dict[str, Any]:
        """The part of createTrainingJob.sync's result (DescribeTrainingJob) that collect_training_job reads."""
        if self.model_artifact is None:
            return {"TrainingJobStatus": "Failed", "FailureReason": self.failure}
        return {"TrainingJobStatus": "Completed", "ModelArtifacts": {"S3ModelArtifacts": self.model_artifact}}


def split_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def download_prefix(s3: Any, uri: str, into: Path) -> None:
    bucket, prefix = split_uri(uri)
    folder = prefix[: prefix.rfind("/") + 1]
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            path = into / item["Key"][len(folder) :]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())


def toolkit_hyperparameters(request: dict[str, Any]) -> dict[str, Any]:
    """The job's hyperparameters as the training toolkit hands them over: each JSON-decoded, else as written."""
    decoded = {}
    for name, value in request["HyperParameters"].items():
        try:
            decoded[name] = json.loads(value)
        except ValueError:
            decoded[name] = value
    return decoded


def run_training_job(request: dict[str, Any], s3: Any, workdir: Path) -> EmulatedJob:
    opt = workdir / "opt" / "ml"
    hyperparameters = toolkit_hyperparameters(request)
    code = opt / "code"
    bucket, key = split_uri(hyperparameters["sagemaker_submit_directory"])
    source = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(source), mode="r:gz") as archive:
        archive.extractall(code, filter="data")
    environ = {name: value for name, value in os.environ.items() if not name.startswith("SM_")}
    for channel in request.get("InputDataConfig", []):
        folder = opt / "input" / "data" / channel["ChannelName"]
        download_prefix(s3, channel["DataSource"]["S3DataSource"]["S3Uri"], folder)
        environ[f"SM_CHANNEL_{channel['ChannelName'].upper()}"] = str(folder)
    site = workdir / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(PINNED_ONLY)
    environ |= request.get("Environment", {})
    environ |= {
        "SM_MODEL_DIR": str(opt / "model"),
        "SM_OUTPUT_DATA_DIR": str(opt / "output" / "data"),
        "SM_OUTPUT_DIR": str(opt / "output"),
        "SM_HPS": json.dumps(hyperparameters),
        "PYTHONPATH": str(site),
    }
    (opt / "model").mkdir(parents=True)
    arguments = [part for name, value in hyperparameters.items() for part in (f"--{name}", str(value))]
    command = [sys.executable, hyperparameters["sagemaker_program"], *arguments]
    process = subprocess.run(command, cwd=code, env=environ, capture_output=True, text=True, timeout=300, check=False)
    artifact = None
    if process.returncode == 0:
        artifact = f"{request['OutputDataConfig']['S3OutputPath']}{request['TrainingJobName']}/output/model.tar.gz"
        bucket, key = split_uri(artifact)
        s3.put_object(Bucket=bucket, Key=key, Body=model_tar(opt / "model"))
    return EmulatedJob(opt, process, artifact)


def model_tar(folder: Path) -> bytes:
    """The model directory as SageMaker uploads it: a tar.gz of its contents, paths relative to it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.add(path, arcname=path.relative_to(folder).as_posix())
    return buffer.getvalue()


def layer_pins() -> dict[str, str]:
    """name -> version of every pin in the Lambda layers' requirements files."""
    pins = {}
    for path in sorted((ROOT / "layers").glob("*/requirements*.txt")):
        for line in path.read_text().splitlines():
            pin = line.split("#", 1)[0].strip()
            if "==" in pin:
                name, version = pin.split("==")
                pins[name.strip().lower()] = version.strip()
    return pins
