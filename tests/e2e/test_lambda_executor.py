"""The local Lambda executor behaves as Lambda does: isolated packages, errors, timeouts, environment."""

from __future__ import annotations

import io
import json
import textwrap
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ROLE = "arn:aws:iam::000000000000:role/recloop-e2e-executor"


def zipped(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", textwrap.dedent(source))
    return buffer.getvalue()


@pytest.fixture
def make_function(aws) -> Iterator[Any]:
    lambda_client = aws("lambda")
    created: list[str] = []

    def make(source: str, layers: list[str] | None = None, timeout: int = 10, env: dict | None = None) -> str:
        name = f"recloop-e2e-{uuid.uuid4().hex[:8]}"
        lambda_client.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": zipped(source)},
            Timeout=timeout,
            MemorySize=256,
            Layers=layers or [],
            Environment={"Variables": env or {}},
        )
        lambda_client.get_waiter("function_active_v2").wait(FunctionName=name)
        created.append(name)
        return name

    yield make
    for name in created:
        lambda_client.delete_function(FunctionName=name)


def invoke(aws, name: str, event: dict | None = None) -> tuple[str | None, dict]:
    response = aws("lambda").invoke(FunctionName=name, Payload=json.dumps(event or {}).encode())
    return response.get("FunctionError"), json.loads(response["Payload"].read())


USES_RECLOOP = """
    import recloop

    def handler(event, context):
        return {"version": recloop.__version__}
"""


def test_a_package_missing_a_module_fails_as_on_aws(aws, make_function) -> None:
    # recloop is installed in the developer's virtualenv; the function must not see it without its layer.
    error, body = invoke(aws, make_function(USES_RECLOOP))
    assert error == "Unhandled"
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert "No module named 'recloop'" in body["errorMessage"]


def test_the_same_package_works_with_its_layer(aws, make_function, stack) -> None:
    error, body = invoke(aws, make_function(USES_RECLOOP, layers=[stack.outputs["CoreLayerArn"]]))
    assert error is None and body == {"version": __import__("recloop").__version__}


def test_an_exception_is_reported_with_type_and_stack_trace(aws, make_function) -> None:
    name = make_function(
        """
        def handler(event, context):
            raise ValueError("bad input: " + event["what"])
        """
    )
    error, body = invoke(aws, name, {"what": "thing"})
    assert error == "Unhandled"
    assert body["errorType"] == "ValueError" and body["errorMessage"] == "bad input: thing"
    assert any("app.py" in frame for frame in body["stackTrace"])


def test_the_timeout_is_enforced_and_the_next_call_starts_fresh(aws, make_function) -> None:
    name = make_function(
        """
        import time
        CALLS = []

        def handler(event, context):
            CALLS.append(1)
            time.sleep(event.get("sleep", 0))
            return {"calls_in_this_sandbox": len(CALLS)}
        """,
        timeout=1,
    )
    error, body = invoke(aws, name, {"sleep": 5})
    assert error == "Unhandled" and "Task timed out after 1.00 seconds" in body["errorMessage"]
    assert invoke(aws, name) == (None, {"calls_in_this_sandbox": 1})
    assert invoke(aws, name) == (None, {"calls_in_this_sandbox": 2})  # warm sandbox keeps module state


def test_environment_and_context_are_lambdas(aws, make_function) -> None:
    name = make_function(
        """
        import os, sys

        def handler(event, context):
            return {
                "greeting": os.environ["GREETING"],
                "function": context.function_name,
                "memory": str(context.memory_limit_in_mb),
                "remaining_ms": context.get_remaining_time_in_millis(),
                "region": os.environ["AWS_REGION"],
                "python": sys.version_info[:2],
                "boto3": __import__("boto3").__version__ != "",
            }
        """,
        env={"GREETING": "hello"},
    )
    error, body = invoke(aws, name)
    assert error is None
    assert body["greeting"] == "hello" and body["function"] == name and body["memory"] == "256"
    assert 0 < body["remaining_ms"] <= 10_000
    assert body["region"] == "us-east-1" and body["python"] == [3, 12] and body["boto3"] is True
