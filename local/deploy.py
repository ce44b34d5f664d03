"""Deploys the SAM application into a profile's LocalStack the way it is deployed to AWS: `sam build`, then
`sam deploy --config-env local` through CloudFormation, with the profile's Redis and buffer size as stack
parameters. The tools' chatter goes to a log file and only its end is shown when a step fails. Once deployed,
it waits until the event source mappings are enabled, so the stack is really wired up when the caller gets it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from local.paths import ROOT, STAGE
from local.processes import log, wait_until
from local.services import Profile, aws_env, boto_client
from recloop.core.progress import Progress, no_progress


def run_logged(command: list[str], log_path: Path, env: dict[str, str]) -> None:
    """Run a build/deploy step with its chatter in a log file; on failure, show the end of that log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(f"{' '.join(command[:2])} failed (see {log_path}):\n" + "\n".join(tail))


def stack_parameters(profile: Profile, redis_url: str) -> list[str]:
    """The stack parameters of a local deployment (`sam deploy --parameter-overrides`)."""
    return [
        "DeploymentProfile=local",
        'ApiAuth=""',
        f"RedisUrl={redis_url}",
        "RedisCluster=false",
        f"StageName={STAGE}",
        "LogLevel=INFO",
        f"OnlineLearningBufferSize={profile.online_learning_buffer_size}",
        f'DriftCheckSchedule="{profile.drift_check_schedule}"',  # quoted: the value has a space
        "CreateDashboard=false",  # LocalStack does not create dashboards from CloudFormation
        f"PredictionErrorAlarmPeriod={profile.prediction_error_alarm_period}",
        f"StreamShardCount={profile.stream_shard_count}",
        f"StreamParallelizationFactor={profile.stream_parallelization_factor}",
    ]


def deploy(profile: Profile, redis_url: str, progress: Progress = no_progress) -> dict[str, str]:
    """sam build, then sam deploy into LocalStack through CloudFormation; returns the stack outputs."""
    sam = str(Path(sys.executable).with_name("sam"))
    env = aws_env(profile)
    sam_log = profile.state / "logs" / "sam.log"
    started = time.monotonic()
    progress("sam build")
    run_logged([sam, "build", "--cached", "--parallel"], sam_log, env)
    log(f"sam build: {time.monotonic() - started:.1f} s")
    boto_client(profile, "s3").create_bucket(Bucket=profile.artifacts_bucket)
    started = time.monotonic()
    progress("sam deploy (CloudFormation in LocalStack)")
    run_logged(
        [
            sam,
            "deploy",
            "--config-env",
            "local",
            "--stack-name",
            profile.stack_name,
            "--s3-bucket",
            profile.artifacts_bucket,
            "--no-resolve-s3",
            "--no-confirm-changeset",
            "--no-fail-on-empty-changeset",
            "--parameter-overrides",
            *stack_parameters(profile, redis_url),
        ],
        sam_log,
        env,
    )
    log(f"sam deploy: {time.monotonic() - started:.1f} s")
    stack = boto_client(profile, "cloudformation").describe_stacks(StackName=profile.stack_name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def wait_for_wiring(profile: Profile) -> None:
    """Event source mappings enabled (none yet is fine)."""
    lambda_client = boto_client(profile, "lambda")

    def mappings_enabled() -> bool:
        states = [m["State"] for m in lambda_client.list_event_source_mappings()["EventSourceMappings"]]
        return all(state == "Enabled" for state in states)

    wait_until(mappings_enabled, 60, "event source mappings")
