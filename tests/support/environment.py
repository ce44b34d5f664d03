"""Names of the resources the tests emulate (moto) and where the sample events live."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

EVENTS_DIR = ROOT / "events"

TEST_BUCKET = "recloop-test-bucket"

TEST_STREAM = "recloop-test-stream"

REGION = "us-east-1"
