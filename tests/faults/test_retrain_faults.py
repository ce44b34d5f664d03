"""A retrain cut short between its Register and PromoteOrCanary steps: the champion stays as it was, the failure
is in the status with the lock released, and the next retrain runs to the end.

The steps are the functions the retrain state machine invokes (statemachines/retrain.asl.json), called here in its
order through the same handlers; a step that raises goes where the state machine's Catch sends it (RecordFailure).
The state machine itself runs in LocalStack in tests/e2e/test_retraining.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.inprocess import LambdaContext, load_function
from recloop.container import get_container, reset_container
from tests.support.environment import REGION
from tests.support.learning import tastes
from tests.support.retraining import pass_through_state_machine
from tests.support.stream import records

GROUPS = {"a": [f"a{n}" for n in range(6)], "b": [f"b{n}" for n in range(6)]}


class InstanceCrashError(Exception):
    """The workflow function's instance died mid-step (Lambda reports it as the step's error)."""


@pytest.fixture
def deployment(aws: dict[str, Any], redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRAIN_STATE_MACHINE_ARN", pass_through_state_machine(REGION))
    reset_container()
    history = tastes(40, datetime.now(UTC).timestamp() - 86_400, GROUPS)
    assert get_container().stream_consumer.archive_many(records(history)) == {}


def step(function: str, task: str, execution_name: str, **fields: Any) -> Any:
    event = {"task": task, "execution_name": execution_name, **fields}
    return load_function(function).lambda_handler(event, LambdaContext())


def run_retrain(execution_name: str, trigger: str, reason: str) -> dict[str, Any]:
    """The retrain state machine's steps in order; a failing step is recorded as its Catch would record it."""
    try:
        step("workflow", "begin_retrain", execution_name, trigger=trigger, reason=reason)
        dataset = step("train", "prepare_dataset", execution_name, events_prefix="events/")
        candidate = step("train", "train", execution_name, dataset=dataset, kind="mf")
        gate = step("workflow", "gate", execution_name, candidate=candidate)
        assert gate["passed"], gate  # no champion yet: nothing to beat
        step("workflow", "register", execution_name, candidate=candidate)
        deployed = step("workflow", "promote_or_canary", execution_name, candidate=candidate)
        step("workflow", "finish_retrain", execution_name)
        return {"candidate": candidate, "deployed": deployed}
    except InstanceCrashError as exc:
        step("workflow", "fail_retrain", execution_name, error={"Error": type(exc).__name__, "Cause": str(exc)})
        raise


def test_a_crash_between_register_and_promote_keeps_the_champion_and_the_next_run_proceeds(
    deployment: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = get_container()
    retraining, registry = services.retraining, services.registry
    first_minute = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    retraining.clock = lambda: first_minute
    first = retraining.request(force=True, reason="first")
    assert first.triggered

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise InstanceCrashError("the instance died after registering")

    monkeypatch.setattr(type(services.retrain_workflow), "promote_or_canary", crash)
    with pytest.raises(InstanceCrashError):
        run_retrain(first.execution_name, "manual", "first")

    assert registry.champion(use_cache=False) is None  # unchanged: there was none
    registered = [model.version for model in registry.list_versions()]
    assert len(registered) == 1  # the version registered before the crash stays, not champion
    status = retraining.status()
    assert not status.retraining_in_progress and status.last_run is not None
    assert status.last_run.outcome == "failed" and status.last_run.error.startswith(
        "InstanceCrashError: the instance died"
    )
    assert status.metrics.failed_retrains == 1

    monkeypatch.undo()  # the next instance is healthy
    retraining.clock = lambda: first_minute + timedelta(minutes=1)
    second = retraining.request(force=True, reason="second")
    assert second.triggered and second.execution_name != first.execution_name
    result = run_retrain(second.execution_name, "manual", "second")

    champion = registry.champion(use_cache=False)
    assert champion is not None and champion.version == result["candidate"]["version"] != registered[0]
    assert result["deployed"]["action"] == "promoted"
    status = retraining.status()
    assert status.last_run.outcome == "succeeded" and not status.retraining_in_progress
    assert status.last_retrain_time is not None and status.metrics.total_retrains == 2
