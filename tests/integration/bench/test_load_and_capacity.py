"""The load test (`python -m bench.load`), run small over a real Redis through the in-process handlers, and the
capacity model (`python -m bench.capacity`) that reads its report: the table in docs/capacity.md is the model's."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bench import capacity

ROOT = Path(__file__).resolve().parents[3]
INPUTS = json.loads(capacity.DEFAULT_INPUTS.read_text())


@pytest.mark.single_node("the benchmark starts its own embedded Redis")
def test_the_load_test_reports_a_curve_per_path_and_what_the_capacity_model_reads(tmp_path: Path) -> None:
    plot = tmp_path / "load.png"
    command = [sys.executable, "-m", "bench.load", "--workers", "1", "--paths", "event,recommend,consumer"]
    command += ["--items", "400", "--users", "300", "--seed-interactions", "3000", "--step-seconds", "0.4"]
    command += ["--plot", str(plot)]
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    for path in ("event", "recommend", "consumer"):
        curve = report["paths"][path]
        assert len(curve["steps"]) == len(capacity_steps()) and all(s["requests"] > 0 for s in curve["steps"])
        assert curve["cpu_ms_per_request"] > 0 and curve["round_trips"] >= 1 and curve["redis_commands"] >= 1
        assert curve["unloaded"]["p50_ms"] <= curve["unloaded"]["p99_ms"]
    # One archive object per consumer batch of 100 records, each event a few hundred bytes compressed.
    assert report["archive_puts_per_batch"] == pytest.approx(1.0, abs=0.05)
    assert 20 < report["archive_bytes_per_event"] < 1000 and 50 < report["record_bytes"] < 1000
    assert Image.open(plot).format == "PNG"
    # The capacity model takes this report as its `load` input.
    assert capacity.model({"load": report, "redis_memory": INPUTS["redis_memory"]})["levels"][0]["monthly_usd"] > 0


def capacity_steps() -> tuple[float, ...]:
    from bench.load import STEP_SHARES

    return STEP_SHARES


def test_docs_capacity_holds_the_models_table() -> None:
    document = (ROOT / "docs" / "capacity.md").read_text()
    table = re.search(r"<!-- capacity-table -->\n(.*?)\n<!-- /capacity-table -->", document, re.S)
    assert table is not None, "docs/capacity.md has no marked table"
    assert table.group(1).strip() == capacity.markdown(capacity.model(INPUTS)).strip()


def test_the_models_memory_sizes_are_the_templates() -> None:
    template = (ROOT / "template.yaml").read_text()
    default = int(re.search(r"^Globals:\n  Function:\n(?:    .*\n)*?    MemorySize: (\d+)", template, re.M).group(1))
    for name, memory in capacity.FUNCTION_MEMORY_MB.items():
        block = re.search(rf"^  {name}:\n((?:    .*\n|\n)*?)(?=^  \S)", template, re.M)
        assert block is not None, name
        own = re.search(r"^      MemorySize: (\d+)", block.group(1), re.M)
        assert memory == (int(own.group(1)) if own else default), name


def test_kinesis_shards_follow_records_and_bytes_per_second() -> None:
    peak = capacity.ASSUMPTIONS["peak_factor"]
    assert capacity.kinesis(999 / peak, 200)["shards"] == 1
    assert capacity.kinesis(1001 / peak, 200)["shards"] == 2  # 1,000 records/s per shard
    assert capacity.kinesis(900 / peak, 5000)["shards"] == 5  # 1 MiB/s per shard: 4.3 MiB/s


def test_api_gateway_prices_its_tiers() -> None:
    assert capacity.api_gateway_monthly(1e6) == pytest.approx(3.50)
    assert capacity.api_gateway_monthly(1e9) == pytest.approx(333 * 3.50 + 667 * 2.80)


@pytest.mark.single_node("starts a cluster of its own beside the session's")
def test_the_load_test_can_run_against_a_redis_cluster_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    import redis.cluster

    from bench import load

    monkeypatch.setenv("REDIS_CLUSTER", "false")  # restored after: redis_for sets it for the workers
    with load.redis_for(cluster=True) as url:
        assert os.environ["REDIS_CLUSTER"] == "true"
        client = redis.cluster.RedisCluster.from_url(url)
        assert client.cluster_info()["cluster_state"] == "ok" and len(client.get_primaries()) == 3
        client.close()
