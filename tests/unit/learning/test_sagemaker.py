"""The SageMaker branch's pure parts: the CreateTrainingJob request against botocore's service model (no network),
the image per region, job names, the source archive, the entry point's bootstrap decision, the model artifact."""

from __future__ import annotations

import ast
import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.loaders import create_loader
from botocore.model import Shape
from botocore.regions import EndpointResolver
from botocore.validate import ParamValidator

from recloop.core.settings import Settings
from recloop.learning.sagemaker import (
    LAUNCHER,
    SKLEARN_IMAGE_ACCOUNTS,
    TRAINING_REQUIREMENTS,
    read_model_artifact,
    running_package_root,
    source_archive,
    source_key,
    training_image,
    training_job_name,
    training_job_request,
)
from recloop.learning.sagemaker_entry import (
    ENTRY_SCRIPT,
    REQUIREMENTS_FILE,
    UV_REQUIREMENT,
    InterpreterTooOldError,
    hyperparameters,
    plan_bootstrap,
    unmet_requirements,
)
from recloop.learning.sagemaker_job import CANDIDATE_FILE, JobHyperparameters, TrainingOutcome
from recloop.models.bundle import CorruptModelError, ModelBundle, ModelKind, ModelMetadata
from tests.support.sagemaker import layer_pins, toolkit_hyperparameters

SETTINGS = Settings.from_env(
    {
        "BUCKET_NAME": "recloop-prod-models",
        "AWS_REGION": "eu-west-1",
        "SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/recloop-sagemaker-training",
        "POPULARITY_HALF_LIFE_HOURS": "72",
    }
)
EXECUTION = "retrain-drift-20261201T120000Z"
SOURCE_KEY = "sagemaker/source/" + "ab" * 32 + ".tar.gz"
ENTRY_MODULE = running_package_root() / "recloop" / "learning" / "sagemaker_entry.py"


def create_training_job() -> Shape:
    return botocore.session.get_session().get_service_model("sagemaker").operation_model("CreateTrainingJob")


def a_request(champion_version: str | None = "mf-20261130T120000Z-0a1b2c", **settings: Any) -> dict[str, Any]:
    params = JobHyperparameters(
        kind=ModelKind.LGBM,
        version="lgbm-20261201T120000Z-abcdef",
        holdout_fraction=0.1,
        champion_version=champion_version,
    )
    configured = SETTINGS.model_copy(update=settings)
    return training_job_request(
        configured,
        execution_name=EXECUTION,
        dataset_key=f"datasets/{EXECUTION}.jsonl.gz",
        source_key=SOURCE_KEY,
        hyperparameters=params,
    )


def constraint_violations(value: Any, shape: Shape, where: str = "$") -> list[str]:
    """What ParamValidator leaves out: each string's pattern and maximum length, each list's and map's size, enums."""
    found = []
    limits = shape.metadata
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            if name in value:
                found += constraint_violations(value[name], member, f"{where}.{name}")
    elif shape.type_name == "list":
        found += [f"{where}: more than {limits['max']} items"] if len(value) > limits.get("max", len(value)) else []
        for n, item in enumerate(value):
            found += constraint_violations(item, shape.member, f"{where}[{n}]")
    elif shape.type_name == "map":
        found += [f"{where}: more than {limits['max']} entries"] if len(value) > limits.get("max", len(value)) else []
        for key, item in value.items():
            found += constraint_violations(key, shape.key, f"{where} key {key!r}")
            found += constraint_violations(item, shape.value, f"{where}[{key!r}]")
    elif shape.type_name == "string":
        if "pattern" in limits and not re.fullmatch(limits["pattern"], value):
            found.append(f"{where}: {value!r} does not match {limits['pattern']}")
        if len(value) > limits.get("max", len(value)):
            found.append(f"{where}: longer than {limits['max']}")
        if shape.enum and value not in shape.enum:
            found.append(f"{where}: {value!r} is not one of the enum")
    elif shape.type_name in ("integer", "long") and not limits.get("min", value) <= value <= limits.get("max", value):
        found.append(f"{where}: {value} outside [{limits.get('min')}, {limits.get('max')}]")
    return found


# ---- the request ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("champion_version", ["mf-20261130T120000Z-0a1b2c", None])
def test_the_request_is_a_valid_create_training_job(champion_version: str | None) -> None:
    request = a_request(champion_version)
    shape = create_training_job().input_shape
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()
    assert constraint_violations(request, shape) == []
    # The fields the state machine passes on, and nothing it would drop.
    assert set(request) == {
        "TrainingJobName",
        "AlgorithmSpecification",
        "RoleArn",
        "InputDataConfig",
        "OutputDataConfig",
        "ResourceConfig",
        "StoppingCondition",
        "HyperParameters",
        "Environment",
    }


def test_the_request_trains_the_dataset_against_the_champion() -> None:
    request = a_request()
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels == {
        "train": f"s3://recloop-prod-models/datasets/{EXECUTION}.jsonl.gz",
        "champion": "s3://recloop-prod-models/models/mf-20261130T120000Z-0a1b2c/",
    }
    assert request["OutputDataConfig"] == {"S3OutputPath": f"s3://recloop-prod-models/sagemaker/{EXECUTION}/"}
    assert request["ResourceConfig"] == {"InstanceType": "ml.m5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 4 * 3600}
    assert request["RoleArn"] == SETTINGS.sagemaker_role_arn
    assert toolkit_hyperparameters(request) == {
        "sagemaker_program": ENTRY_SCRIPT,
        "sagemaker_submit_directory": f"s3://recloop-prod-models/{SOURCE_KEY}",
        "sagemaker_region": "eu-west-1",
        "kind": "lgbm",
        "version": "lgbm-20261201T120000Z-abcdef",
        "holdout_fraction": 0.1,
        "champion_version": "mf-20261130T120000Z-0a1b2c",
    }
    # The settings that shape training travel with the job; infrastructure does not.
    assert request["Environment"]["POPULARITY_HALF_LIFE_HOURS"] == "72.0"
    assert not {"BUCKET_NAME", "REDIS_URL", "SAGEMAKER_ROLE_ARN"} & set(request["Environment"])


def test_the_machine_and_image_come_from_the_settings() -> None:
    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/recloop-training:3"
    request = a_request(
        sagemaker_instance_type="ml.c5.9xlarge",
        sagemaker_volume_size_gb=100,
        sagemaker_max_runtime_seconds=7200,
        sagemaker_training_image=image,
    )
    assert request["ResourceConfig"] == {"InstanceType": "ml.c5.9xlarge", "InstanceCount": 1, "VolumeSizeInGB": 100}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200}
    assert request["AlgorithmSpecification"] == {"TrainingImage": image, "TrainingInputMode": "File"}


def test_the_settings_refuse_what_sagemaker_would() -> None:
    from recloop.core.settings import SettingsError

    with pytest.raises(SettingsError, match="SAGEMAKER_INSTANCE_TYPE"):
        Settings.from_env({"SAGEMAKER_INSTANCE_TYPE": "m5.2xlarge"})
    with pytest.raises(SettingsError, match="SAGEMAKER_JOB_NAME_PREFIX"):
        Settings.from_env({"SAGEMAKER_JOB_NAME_PREFIX": "recloop_prod"})


# ---- the image and the job name -------------------------------------------------------------------------------------


def test_the_image_is_the_regions_prebuilt_scikit_learn_image() -> None:
    assert training_image("us-east-1") == (
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.4-2-py312-cpu-py3"
    )
    resolver = EndpointResolver(create_loader().load_data("endpoints"))
    for region, account in SKLEARN_IMAGE_ACCOUNTS.items():
        registry = f"{account}.dkr.{resolver.construct_endpoint('ecr', region)['hostname']}/"
        assert training_image(region).startswith(registry), region
    assert training_image("us-east-1", override="my/image:1") == "my/image:1"
    with pytest.raises(ValueError, match="set SAGEMAKER_TRAINING_IMAGE"):
        training_image("mars-north-1")


@pytest.mark.parametrize(
    "execution_name",
    [
        EXECUTION,
        "retrain_manual_20261201T120000Z",
        "x" * 80,
        "retrain-manual-" + "-" * 60 + "z",
        "retrain-schedule-20261201T120000Z-with-a-very-long-suffix-that-goes-on",
    ],
)
def test_job_names_follow_sagemakers_rules(execution_name: str) -> None:
    rule = create_training_job().input_shape.members["TrainingJobName"].metadata["pattern"]
    name = training_job_name("recloop", execution_name)
    assert re.fullmatch(rule, name) and len(name) <= 63, name


def test_long_execution_names_keep_distinct_job_names() -> None:
    first = training_job_name("recloop-prod", "retrain-schedule-20261201T120000Z-" + "a" * 40)
    second = training_job_name("recloop-prod", "retrain-schedule-20261201T120000Z-" + "a" * 39 + "b")
    assert first != second
    assert first.startswith("recloop-prod-retrain-schedule-20261201T120000Z-")
    assert training_job_name("recloop", EXECUTION) == f"recloop-{EXECUTION}"


# ---- the source archive ---------------------------------------------------------------------------------------------


def test_the_training_requirements_are_the_layers_pins() -> None:
    pins = layer_pins()
    for requirement in TRAINING_REQUIREMENTS:
        name, version = requirement.split("==")
        assert pins.get(name) == version, f"{requirement}: the layers pin {name}=={pins.get(name)}"


def test_the_source_archive_holds_the_launcher_the_pins_and_the_package() -> None:
    root = running_package_root()
    archive = source_archive(root)
    assert source_archive(root) == archive  # the same code, the same bytes: one upload per code version
    assert re.fullmatch(r"sagemaker/source/[0-9a-f]{64}\.tar\.gz", source_key(archive))
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as opened:
        members = {m.name: m for m in opened.getmembers()}
        launcher = opened.extractfile(members[ENTRY_SCRIPT])
        requirements = opened.extractfile(members[REQUIREMENTS_FILE])
        assert launcher is not None and launcher.read().decode() == LAUNCHER
        assert requirements is not None and requirements.read().decode().split() == list(TRAINING_REQUIREMENTS)
    package = {p.relative_to(root).as_posix() for p in (root / "recloop").rglob("*.py")}
    assert package <= set(members)
    assert not [name for name in members if "__pycache__" in name or name.endswith(".pyc")]
    assert "requirements.txt" not in members  # the toolkit would install it into the container's own Python
    assert all(m.isfile() and m.mtime == 0 and m.uid == 0 for m in members.values())


# ---- the entry point's bootstrap ------------------------------------------------------------------------------------

ARGV = ["/opt/ml/code/recloop_train.py", "--kind", "lgbm"]
REQUIREMENTS = "/opt/ml/code/training-requirements.txt"


def test_an_older_python_reruns_the_entry_point_in_python_312_through_uv() -> None:
    plan = plan_bootstrap("/usr/bin/python3", (3, 9), [], ARGV, requirements=REQUIREMENTS)
    assert plan.install == [["/usr/bin/python3", "-m", "pip", "install", "--no-cache-dir", UV_REQUIREMENT]]
    assert plan.rerun == [
        "/usr/bin/python3",
        *("-m", "uv", "run", "--no-project", "--python", "3.12"),
        *("--with-requirements", REQUIREMENTS, "python", *ARGV),
    ]


def test_python_312_with_the_pins_trains_in_place() -> None:
    assert plan_bootstrap("/usr/bin/python3", (3, 12), [], ARGV, requirements=REQUIREMENTS) == ([], None)


def test_python_312_without_the_pins_installs_them_first() -> None:
    plan = plan_bootstrap("/usr/bin/python3", (3, 13), ["numpy==2.5.5"], ARGV, requirements=REQUIREMENTS)
    assert plan.install == [["/usr/bin/python3", "-m", "pip", "install", "--no-cache-dir", "-r", REQUIREMENTS]]
    assert plan.rerun is None


def test_a_rerun_that_is_still_too_old_fails_instead_of_looping() -> None:
    with pytest.raises(InterpreterTooOldError, match=r"Python 3\.10 after the bootstrap"):
        plan_bootstrap("/usr/bin/python3", (3, 10), [], ARGV, requirements=REQUIREMENTS, bootstrapped=True)


def test_this_python_has_the_pins_and_another_version_is_unmet(tmp_path: Path) -> None:
    pins = tmp_path / REQUIREMENTS_FILE
    pins.write_text("".join(f"{pin}\n" for pin in TRAINING_REQUIREMENTS))
    assert unmet_requirements(str(pins)) == []  # the development environment is the training environment
    pins.write_text("# comment\nnumpy==1.0.0\nno-such-distribution==1.0\npydantic==2.14.4  # pinned\n")
    assert unmet_requirements(str(pins)) == ["numpy==1.0.0", "no-such-distribution==1.0"]


def test_the_entry_module_runs_its_decision_on_python_3_8(tmp_path: Path) -> None:
    """Before the bootstrap the container's own Python imports it: the syntax and standard library of 3.8."""
    ast.parse(ENTRY_MODULE.read_text(), feature_version=(3, 8))
    found = sorted((Path.home() / ".pyenv" / "versions").glob("3.8.*/bin/python3.8"))
    python38 = str(found[-1]) if found else shutil.which("python3.8")
    assert python38 is not None, "needs a Python 3.8 (the development machine's pyenv has 3.8.18)"
    code = tmp_path / "code"
    with tarfile.open(fileobj=io.BytesIO(source_archive(running_package_root())), mode="r:gz") as archive:
        archive.extractall(code, filter="data")
    probe = (
        "import json, sys; from recloop.learning.sagemaker_entry import plan_bootstrap; "
        "plan = plan_bootstrap(sys.executable, sys.version_info[:2], [], sys.argv[1:], requirements='r.txt'); "
        "print(json.dumps(plan._asdict()))"
    )
    result = subprocess.run(
        [python38, "-c", probe, ENTRY_SCRIPT, "--kind", "mf"],
        cwd=code,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(code)},
    )
    plan = json.loads(result.stdout)
    assert plan["install"] == [[python38, "-m", "pip", "install", "--no-cache-dir", UV_REQUIREMENT]]
    assert plan["rerun"][1:8] == ["-m", "uv", "run", "--no-project", "--python", "3.12", "--with-requirements"]
    assert plan["rerun"][-4:] == ["python", ENTRY_SCRIPT, "--kind", "mf"]


def test_hyperparameters_come_from_sm_hps_else_the_command_line() -> None:
    hps = {"kind": "mf", "version": "mf-x", "holdout_fraction": 0.2}
    assert hyperparameters({"SM_HPS": json.dumps(hps)}, ["--kind", "lgbm"]) == hps
    assert hyperparameters({}, ["--kind", "lgbm", "--holdout_fraction", "0.2"]) == {
        "kind": "lgbm",
        "holdout_fraction": "0.2",
    }
    assert JobHyperparameters.model_validate(hps).holdout_fraction == 0.2


def test_the_launcher_only_calls_the_entry_module() -> None:
    tree = ast.parse(LAUNCHER, feature_version=(3, 8))
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imported == ["recloop.learning.sagemaker_entry"]


# ---- the model artifact ---------------------------------------------------------------------------------------------


def artifact(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def outcome(version: str = "popularity-1") -> bytes:
    return (
        TrainingOutcome(
            version=version,
            kind=ModelKind.POPULARITY,
            candidate_hr=0.2,
            champion_hr=0.1,
            champion_version="popularity-0",
            candidate_metrics={"hr_at_10": 0.2, "coverage": None},
            champion_metrics={"hr_at_10": 0.1, "coverage": None},
        )
        .model_dump_json()
        .encode()
    )


def a_bundle() -> dict[str, bytes]:
    return ModelBundle(ModelMetadata(version="popularity-1", kind=ModelKind.POPULARITY), {"a/b.bin": b"x"}).serialised()


def test_a_model_artifact_gives_the_bundle_and_the_outcome() -> None:
    bundle, read = read_model_artifact(artifact({**a_bundle(), CANDIDATE_FILE: outcome()}))
    assert bundle.metadata.version == read.version == "popularity-1"
    assert bundle.files == {"a/b.bin": b"x"}
    assert read.champion_metrics == {"hr_at_10": 0.1, "coverage": None}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"metadata.json": a_bundle()["metadata.json"], "a/b.bin": b"x"}, "holds no candidate.json"),
        ({**a_bundle(), "a/b.bin": b"changed", CANDIDATE_FILE: outcome()}, "does not match its checksum"),
        ({**a_bundle(), CANDIDATE_FILE: outcome("popularity-2")}, "names popularity-2, the bundle popularity-1"),
        ({**a_bundle(), "../escape": b"", CANDIDATE_FILE: outcome()}, "outside the model directory"),
    ],
)
def test_a_model_artifact_that_is_incomplete_or_altered_is_refused(files: dict[str, bytes], message: str) -> None:
    with pytest.raises(CorruptModelError, match=re.escape(message)):
        read_model_artifact(artifact(files))


def test_a_model_artifact_that_is_not_a_tarball_is_refused() -> None:
    with pytest.raises(CorruptModelError, match="unreadable"):
        read_model_artifact(b"not a tarball")
