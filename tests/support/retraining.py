"""A drift report as the retraining triggers read it (only its verdict, score and time matter to them)."""

from __future__ import annotations

import json
from datetime import datetime

import boto3

from recloop.drift.features import Source
from recloop.drift.model import DriftReport, new_run_id


def drift_report(checked_at: datetime, *, drifted: bool = True, score: float = 0.0234) -> DriftReport:
    return DriftReport(
        run_id=new_run_id(checked_at),
        checked_at=checked_at.isoformat(timespec="seconds"),
        model_version="v2",
        reference_version="v2",
        threshold=0.05,
        drifted=drifted,
        drift_score=score,
        drifted_features=["score"] if drifted else [],
        reference_rows={Source.SERVED: 5000},
        window_rows={Source.SERVED: 1000},
        window_observed={Source.SERVED: 1000},
        features=[],
    )


def pass_through_state_machine(region: str, name: str = "recloop-test-retrain") -> str:
    """A state machine in moto that passes its input through: what starting a retrain needs from Step Functions
    where the retrain itself is not under test."""
    definition = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}
    return boto3.client("stepfunctions", region_name=region).create_state_machine(
        name=name,
        definition=json.dumps(definition),
        roleArn=f"arn:aws:iam::123456789012:role/{name}",
    )["stateMachineArn"]
