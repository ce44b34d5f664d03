"""The tools the local runtime needs that are not in the project's virtualenv: LocalStack core with our Lambda
executor plugin, in a virtualenv of its own (it needs Python 3.13), and the boto3 that the managed python3.12
Lambda runtime provides, in a folder of its own (functions must not bundle it). Each install is stamped with a
fingerprint of its requirements, so it is only redone when they change.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from local.paths import LOCAL, ROOT
from local.processes import log

LOCALSTACK_VENV = LOCAL / "localstack-venv"
LAMBDA_RUNTIME_SITE = LOCAL / "lambda-runtime"
LOCALSTACK_REQUIREMENTS = ROOT / "local" / "requirements-localstack.txt"
LAMBDA_RUNTIME_REQUIREMENTS = ROOT / "local" / "requirements-lambda-runtime.txt"
EXECUTOR_PACKAGE = ROOT / "local" / "lambda_executor"


def python_for(version: str) -> str:
    """A real interpreter path for `version` (pyenv shims only work inside the repository)."""
    for command in (["pyenv", "which", f"python{version}"], ["which", f"python{version}"]):
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            found = subprocess.run(
                command, capture_output=True, text=True, check=True, env={**os.environ, "PYENV_VERSION": version}
            ).stdout.strip()
            if found:
                return found
    raise SystemExit(f"python{version} is needed (pyenv install {version}); it was not found")


def _fingerprint(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        for file in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
            if "__pycache__" not in file.parts and ".egg-info" not in str(file):
                digest.update(file.read_bytes())
    return digest.hexdigest()


def ensure_localstack() -> Path:
    """LocalStack core, pinned, in its own virtualenv, with our Lambda executor plugin installed."""
    python = LOCALSTACK_VENV / "bin" / "python"
    stamp = LOCALSTACK_VENV / ".fingerprint"
    wanted = _fingerprint(LOCALSTACK_REQUIREMENTS, EXECUTOR_PACKAGE / "pyproject.toml")
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    log("installing LocalStack into .local/localstack-venv (first run only)")
    shutil.rmtree(LOCALSTACK_VENV, ignore_errors=True)
    # LocalStack 2026.3 uses Python 3.13 APIs (warnings.deprecated); the Lambda functions still run on 3.12.
    subprocess.run([python_for("3.13"), "-m", "venv", str(LOCALSTACK_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(LOCALSTACK_REQUIREMENTS)], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(EXECUTOR_PACKAGE)], check=True)
    stamp.write_text(wanted)
    return python


def ensure_lambda_runtime_site() -> Path:
    """boto3 as the managed python3.12 runtime provides it (functions must not bundle it)."""
    stamp = LAMBDA_RUNTIME_SITE / ".fingerprint"
    wanted = _fingerprint(LAMBDA_RUNTIME_REQUIREMENTS)
    if stamp.exists() and stamp.read_text() == wanted:
        return LAMBDA_RUNTIME_SITE
    log("installing the Lambda runtime's boto3 into .local/lambda-runtime")
    shutil.rmtree(LAMBDA_RUNTIME_SITE, ignore_errors=True)
    subprocess.run(
        [
            python_for("3.12"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(LAMBDA_RUNTIME_SITE),
            "-r",
            str(LAMBDA_RUNTIME_REQUIREMENTS),
        ],
        check=True,
    )
    stamp.write_text(wanted)
    return LAMBDA_RUNTIME_SITE
