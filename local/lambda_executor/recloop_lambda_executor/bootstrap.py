"""The Python Lambda runtime loop, run by the executor as `python3.12 -S -u bootstrap.py`.

Standard library only: with -S no site-packages are visible, so the handler sees exactly its
deployed package, its layers and the runtime's boto3, as on AWS. The executor sends one JSON line
per invocation on one pipe and reads one JSON line per result on another; stdout and stderr are
the function's log stream.
"""

import importlib
import json
import os
import sys
import time
import traceback


class LambdaContext:
    def __init__(self, request_id: str, invoked_arn: str, deadline_ms: int) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def error_body(exc: BaseException, error_type: str | None = None, message: str | None = None) -> dict:
    frames = traceback.extract_tb(exc.__traceback__)
    return {
        "errorMessage": message if message is not None else str(exc),
        "errorType": error_type or type(exc).__name__,
        "requestId": "",
        "stackTrace": [line for line in traceback.format_list(frames)],
    }


def load_handler():
    """Import the handler the way the Python runtime does; an error is returned, not raised."""
    module_path, _, function_name = os.environ["_HANDLER"].rpartition(".")
    module_name = module_path.replace("/", ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return None, error_body(exc, "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}")
    except SyntaxError as exc:
        return None, error_body(exc, "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}")
    except Exception as exc:  # any exception raised at init is the function's error
        traceback.print_exc()
        return None, error_body(exc)
    handler = getattr(module, function_name, None)
    if handler is None:
        message = f"Handler '{function_name}' missing on module '{module_name}'"
        return None, {
            "errorMessage": message,
            "errorType": "Runtime.HandlerNotFound",
            "requestId": "",
            "stackTrace": [],
        }
    return handler, None


def die_with_parent() -> None:
    """Linux: end this sandbox when LocalStack ends, however LocalStack ends."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> None:
    die_with_parent()
    sys.path[:0] = [p for p in os.environ.pop("RECLOOP_LAMBDA_PATHS", "").split(os.pathsep) if p]
    read_fd, write_fd = (int(fd) for fd in os.environ.pop("RECLOOP_CONTROL_FDS").split(","))
    requests = os.fdopen(read_fd, "r", encoding="utf-8")
    replies = os.fdopen(write_fd, "w", encoding="utf-8")
    os.chdir(os.environ["LAMBDA_TASK_ROOT"])

    def reply(message: dict) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    handler, init_error = load_handler()
    reply({"ready": True, "init_error": init_error})

    for line in requests:
        request = json.loads(line)
        os.environ["_X_AMZN_TRACE_ID"] = request.get("trace_id") or ""
        context = LambdaContext(request["request_id"], request["invoked_arn"], request["deadline_ms"])
        print(f"START RequestId: {context.aws_request_id} Version: {context.function_version}")
        try:
            event = json.loads(request["payload"]) if request["payload"] else {}
            result = handler(event, context)
            try:
                message = {"ok": True, "payload": json.dumps(result)}
            except (TypeError, ValueError) as exc:
                message = {"ok": False, "payload": json.dumps(error_body(exc, "Runtime.MarshalError"))}
        except Exception as exc:  # the function's error, reported as Lambda reports it
            body = error_body(exc)
            body["requestId"] = context.aws_request_id
            print(f"[ERROR] {body['errorType']}: {body['errorMessage']}", file=sys.stderr)
            traceback.print_exc()
            message = {"ok": False, "payload": json.dumps(body)}
        print(f"END RequestId: {context.aws_request_id}")
        reply(message)


if __name__ == "__main__":
    main()
