"""A LocalStack runtime executor that runs each execution environment as a host Python process.

Each environment is one long-lived `python3.12 -S` process that imports the handler once (the cold
start) and then serves invocations, like a Lambda sandbox. Its import path is exactly the function's
deployed code, its layers' `python/` folders and a runtime folder holding boto3 (which AWS provides),
so a packaging mistake fails here as it would on AWS. Timeout and memory are enforced the way a
subprocess allows: the process is killed when the function's timeout passes, and when its peak
resident memory exceeds the function's memory size.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from localstack import config
from localstack.services.lambda_.invocation.lambda_models import FunctionVersion, InvocationResult
from localstack.services.lambda_.invocation.runtime_executor import LambdaRuntimeException, RuntimeExecutor

LOG = logging.getLogger(__name__)

BOOTSTRAP = Path(__file__).with_name("bootstrap.py")
STARTUP_TIMEOUT_SECONDS = float(os.environ.get("LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT", "30"))
MAX_LOG_CHARS = 256 * 1024
# Inherited from the host so the interpreter and shared libraries work; nothing else leaks in.
HOST_VARIABLES = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


def lambda_python() -> str:
    """The Python 3.12 that plays the Lambda runtime: RECLOOP_LAMBDA_PYTHON, else LocalStack's base interpreter."""
    return os.environ.get("RECLOOP_LAMBDA_PYTHON") or getattr(sys, "_base_executable", sys.executable)


class RuntimeExitedError(Exception):
    pass


class SubprocessRuntimeExecutor(RuntimeExecutor):
    def __init__(self, id: str, function_version: FunctionVersion) -> None:
        super().__init__(id, function_version)
        self._process: subprocess.Popen | None = None
        self._requests = None
        self._replies_fd: int | None = None
        self._reply_buffer = b""
        self._init_error: dict | None = None
        self._env: dict[str, str] = {}
        self._logs: list[str] = []
        self._dropped_lines = 0  # lines rotated out, so marks stay valid
        self._log_lock = threading.Lock()
        self._invoke_lock = threading.Lock()

    # -- RuntimeExecutor ------------------------------------------------------------------------

    def start(self, env_vars: dict[str, str]) -> None:
        self._env = {k: str(v) for k, v in env_vars.items()}
        self._spawn()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)

    def get_address(self) -> str:
        return "127.0.0.1"

    def get_endpoint_from_executor(self) -> str:
        return "127.0.0.1"

    def get_runtime_endpoint(self) -> str:
        return f"http://127.0.0.1:{config.GATEWAY_LISTEN[0].port}/_localstack_lambda/{self.id}"

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        request_id = payload["invoke-id"]
        with self._invoke_lock:
            if self._process is None or self._process.poll() is not None:
                self._spawn()  # the previous process died or timed out: a new cold start
            mark = self._log_mark()
            if self._init_error is not None:
                body = dict(self._init_error, requestId=request_id)
                return InvocationResult(request_id, json.dumps(body).encode(), is_error=True, logs=self.get_logs())
            timeout = float(self.function_version.config.timeout)
            request = {
                "request_id": request_id,
                "invoked_arn": payload["invoked-function-arn"],
                "payload": payload["payload"],
                "trace_id": payload.get("trace-id"),
                "deadline_ms": int((time.time() + timeout) * 1000),
            }
            try:
                self._requests.write(json.dumps(request) + "\n")
                self._requests.flush()
                reply = self._read_reply(timeout)
            except TimeoutError:
                self.stop()
                return self._error(request_id, mark, "Sandbox.Timedout", f"Task timed out after {timeout:.2f} seconds")
            except (RuntimeExitedError, BrokenPipeError, OSError):
                code = self._process.poll() if self._process else None
                self.stop()
                return self._error(
                    request_id,
                    mark,
                    "Runtime.ExitError",
                    f"RequestId: {request_id} Error: Runtime exited with error: exit status {code}",
                )
            if self._peak_memory_mb() > self.function_version.config.memory_size:
                self.stop()
                return self._error(
                    request_id,
                    mark,
                    "Runtime.OutOfMemory",
                    f"RequestId: {request_id} Error: Runtime exited with error: signal: killed",
                )
            return InvocationResult(
                request_id, reply["payload"].encode(), is_error=not reply["ok"], logs=self._logs_since(mark)
            )

    def get_logs(self) -> str:
        return self._logs_since(0)

    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        if function_version.config.code:
            function_version.config.code.prepare_for_execution()
        for layer in function_version.config.layers:
            if layer.code:
                layer.code.prepare_for_execution()

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        pass

    @classmethod
    def validate_environment(cls) -> bool:
        python = lambda_python()
        if not Path(python).exists():
            LOG.warning("Lambda runtime interpreter %s not found (set RECLOOP_LAMBDA_PYTHON)", python)
            return False
        return True

    # -- internals ------------------------------------------------------------------------------

    def _import_paths(self) -> list[str]:
        code = self.function_version.config.code.get_unzipped_code_location()
        paths = [str(code)]
        for layer in self.function_version.config.layers:
            root = layer.code.get_unzipped_code_location()
            # The folders AWS puts on sys.path from /opt.
            paths += [str(root / "python"), str(root / "python" / "lib" / "python3.12" / "site-packages")]
        runtime_site = os.environ.get("RECLOOP_LAMBDA_RUNTIME_SITE")
        if runtime_site:
            paths.append(runtime_site)  # boto3 and botocore, as the managed runtime provides them
        return paths

    def _layer_libraries(self) -> list[str]:
        return [str(layer.code.get_unzipped_code_location() / "lib") for layer in self.function_version.config.layers]

    def _spawn(self) -> None:
        code_dir = str(self.function_version.config.code.get_unzipped_code_location())
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = {name: os.environ[name] for name in HOST_VARIABLES if name in os.environ}
        env.update(self._env)
        env.update(
            LAMBDA_TASK_ROOT=code_dir,
            RECLOOP_LAMBDA_PATHS=os.pathsep.join(self._import_paths()),
            RECLOOP_CONTROL_FDS=f"{to_child_r},{from_child_w}",
            LD_LIBRARY_PATH=os.pathsep.join([*self._layer_libraries(), env.get("LD_LIBRARY_PATH", "")]).strip(":"),
            PYTHONDONTWRITEBYTECODE="1",
        )
        process = subprocess.Popen(
            [lambda_python(), "-S", "-u", str(BOOTSTRAP)],
            env=env,
            cwd=code_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(to_child_r, from_child_w),
            start_new_session=True,  # its own process group, killed as one
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._process = process
        self._requests = os.fdopen(to_child_w, "w", encoding="utf-8")
        self._replies_fd = from_child_r
        self._reply_buffer = b""
        threading.Thread(target=self._pump_logs, args=(process,), daemon=True).start()
        try:
            ready = self._read_reply(STARTUP_TIMEOUT_SECONDS)
        except (TimeoutError, RuntimeExitedError) as exc:
            self.stop()
            raise LambdaRuntimeException(f"runtime did not start: {exc}\n{self.get_logs()}") from exc
        self._init_error = ready.get("init_error")

    def _read_reply(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._reply_buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer within {timeout:.2f} s")
            readable, _, _ = select.select([self._replies_fd], [], [], remaining)
            if readable:
                chunk = os.read(self._replies_fd, 65536)
                if not chunk:
                    raise RuntimeExitedError("runtime process exited")
                self._reply_buffer += chunk
        line, _, self._reply_buffer = self._reply_buffer.partition(b"\n")
        return json.loads(line)

    def _pump_logs(self, process: subprocess.Popen) -> None:
        for raw in iter(process.stdout.readline, b""):
            line = raw.decode("utf-8", "replace")
            with self._log_lock:
                self._logs.append(line)
                while sum(len(entry) for entry in self._logs) > MAX_LOG_CHARS and len(self._logs) > 1:
                    self._logs.pop(0)
                    self._dropped_lines += 1

    def _log_mark(self) -> int:
        with self._log_lock:
            return self._dropped_lines + len(self._logs)

    def _logs_since(self, mark: int) -> str:
        time.sleep(0.01)  # let the pump thread catch the invocation's last lines
        with self._log_lock:
            return "".join(self._logs[max(0, mark - self._dropped_lines) :])

    def _peak_memory_mb(self) -> float:
        try:
            status = Path(f"/proc/{self._process.pid}/status").read_text()
        except (OSError, AttributeError):
            return 0.0
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _error(self, request_id: str, mark: int, error_type: str, message: str) -> InvocationResult:
        body = {"errorType": error_type, "errorMessage": message, "requestId": request_id}
        return InvocationResult(request_id, json.dumps(body).encode(), is_error=True, logs=self._logs_since(mark))
