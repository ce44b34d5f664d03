"""The entry point of a retrain's SageMaker training job, run by the prebuilt scikit-learn container.

SageMaker's training toolkit unpacks the source archive (recloop.learning.sagemaker.source_archive) into
/opt/ml/code and runs its top-level script, `recloop_train.py`, with the container's own Python. RecLoop needs
Python 3.12 and its pinned libraries, which that interpreter may not have (older images run 3.9 or 3.10). So this
module uses the standard library only, in the syntax of Python 3.8, until it has decided where training runs:

- on Python >= 3.12 with every pinned requirement installed: here;
- on Python >= 3.12 with some missing or at another version: here, after `pip install -r` of the pins;
- on an older Python: `pip install uv`, then `uv run --python 3.12 --with-requirements ...` runs this script again
  in a Python 3.12 environment (uv downloads the interpreter if the image has none). Both steps need the network.

The pins travel in `training-requirements.txt`, not `requirements.txt`: the toolkit would install the latter into
the container's own Python before this script runs, which fails on an interpreter older than the pins support.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import NamedTuple

REQUIRED_PYTHON = (3, 12)
ENTRY_SCRIPT = "recloop_train.py"
REQUIREMENTS_FILE = "training-requirements.txt"
UV_REQUIREMENT = "uv==0.13.8"
# Set for the run uv starts: if that interpreter is still too old, fail rather than bootstrap again, forever.
BOOTSTRAPPED_ENV = "RECLOOP_TRAINING_BOOTSTRAPPED"


class Bootstrap(NamedTuple):
    """What to run before training: `install` commands in order, then `rerun` (training elsewhere) if given."""

    install: list[list[str]]
    rerun: list[str] | None


class InterpreterTooOldError(RuntimeError):
    pass


def plan_bootstrap(
    python: str,
    version: tuple[int, int],
    unmet: Sequence[str],
    argv: Sequence[str],
    *,
    requirements: str,
    bootstrapped: bool = False,
) -> Bootstrap:
    """The commands that give training a Python >= 3.12 with the pinned requirements (see the module's doc)."""
    if version >= REQUIRED_PYTHON:
        if not unmet:
            return Bootstrap([], None)
        return Bootstrap([[python, "-m", "pip", "install", "--no-cache-dir", "-r", requirements]], None)
    if bootstrapped:
        raise InterpreterTooOldError(
            f"Python {version[0]}.{version[1]} after the bootstrap; training needs "
            f"{REQUIRED_PYTHON[0]}.{REQUIRED_PYTHON[1]}"
        )
    python_version = f"{REQUIRED_PYTHON[0]}.{REQUIRED_PYTHON[1]}"
    rerun = [python, "-m", "uv", "run", "--no-project", "--python", python_version]
    rerun += ["--with-requirements", requirements, "python", *argv]
    return Bootstrap([[python, "-m", "pip", "install", "--no-cache-dir", UV_REQUIREMENT]], rerun)


def unmet_requirements(requirements: str) -> list[str]:
    """The `name==version` pins of the file that this interpreter does not have at that version."""
    unmet = []
    with open(requirements, encoding="utf-8") as handle:
        for line in handle:
            pin = line.split("#", 1)[0].strip()
            if not pin:
                continue
            name, _, wanted = pin.partition("==")
            try:
                installed = metadata.version(name.strip())
            except metadata.PackageNotFoundError:
                installed = None
            if installed != wanted.strip():
                unmet.append(pin)
    return unmet


def hyperparameters(environ: Mapping[str, str], args: Sequence[str]) -> dict[str, object]:
    """SM_HPS (the toolkit's JSON of the job's hyperparameters), else `--name value` pairs from the command line."""
    if environ.get("SM_HPS"):
        return dict(json.loads(environ["SM_HPS"]))
    pairs: dict[str, object] = {}
    for n in range(0, len(args) - 1, 2):
        if args[n].startswith("--"):
            pairs[args[n][2:]] = args[n + 1]
    return pairs


def main(argv: Sequence[str]) -> int:
    """Run by `recloop_train.py` with its sys.argv; the process's exit status."""
    script = os.path.abspath(argv[0])
    requirements = os.path.join(os.path.dirname(script), REQUIREMENTS_FILE)
    version = (sys.version_info[0], sys.version_info[1])
    unmet = unmet_requirements(requirements) if version >= REQUIRED_PYTHON else []
    bootstrapped = bool(os.environ.get(BOOTSTRAPPED_ENV))
    plan = plan_bootstrap(
        sys.executable, version, unmet, [script, *argv[1:]], requirements=requirements, bootstrapped=bootstrapped
    )
    for command in plan.install:
        print("bootstrap: " + " ".join(command), flush=True)
        subprocess.run(command, check=True)
    if plan.rerun is not None:
        print("bootstrap: " + " ".join(plan.rerun), flush=True)
        return subprocess.run(plan.rerun, env={**os.environ, BOOTSTRAPPED_ENV: "1"}, check=False).returncode
    # Python >= 3.12 with the pins from here on: the package itself.
    from recloop.learning.sagemaker_job import run_training_job

    run_training_job(os.environ, hyperparameters(os.environ, argv[1:]))
    return 0
