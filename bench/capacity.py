"""`python -m bench.capacity`: what RecLoop needs and costs at 1k, 10k and 100k requests/s, from measurements.

Usage: python -m bench.capacity [--inputs docs/capacity-inputs.json] [--json | --markdown]

The inputs are two benchmark reports, kept together in one file so the table in docs/capacity.md can be recomputed:
`load` (python -m bench.load --json: CPU per request, unloaded latency, Redis round trips, Redis CPU and commands
per request, archive bytes per event) and `redis_memory` (python -m bench.redis_memory: bytes per user, per item,
per event of the de-duplication window). Everything else is the template's configuration (memory sizes, batch
size) or a stated assumption (ASSUMPTIONS), and the prices are AWS list prices (PRICES, dated).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUTS = ROOT / "docs" / "capacity-inputs.json"
LEVELS = (1_000, 10_000, 100_000)
SECONDS_PER_MONTH = 30 * 86_400
HOURS_PER_MONTH = 30 * 24

ASSUMPTIONS = {
    "users": 10_000_000,
    "items": 1_000_000,
    # Of the API's requests: interaction events (one per request) and recommendations.
    "event_share": 0.75,
    # Lambda to ElastiCache in one AZ: a round trip over the VPC network (the benchmarks' Redis is a local socket).
    "network_round_trip_ms": 0.4,
    # A Redis shard's main thread kept below this share of a core (headroom for failover, rehash, peaks).
    "redis_core_budget": 0.6,
    # ElastiCache keeps 25% of a node's memory for itself (reserved-memory-percent) and replication needs headroom.
    "redis_usable_memory": 0.75,
    # Peaks over the average, for concurrency and shards.
    "peak_factor": 1.5,
    "replicas_per_shard": 1,
    # The stream consumer's batches (the template's BatchSize) and the archive's retention (S3 lifecycle).
    "consumer_batch": 100,
    "archive_months_kept": 12,
    # Step Functions: the drift check every hour (5 transitions), a retrain at most every hour (14 transitions).
    "drift_check_transitions": 5,
    "retrain_transitions": 14,
}

# The template's memory sizes (template.yaml; tests/integration/bench/test_capacity.py checks they agree).
FUNCTION_MEMORY_MB = {"EventFunction": 1024, "RecommendFunction": 1024, "OnlineUpdateFunction": 1769}
LAMBDA_FULL_VCPU_MB = 1769  # Lambda gives one full vCPU at 1,769 MB, proportionally less below

# AWS list prices, us-east-1, on-demand, x86, as published by AWS in 2025 (priced on 2026-12-02: check the pricing
# pages before budgeting; savings plans, reserved nodes and Graviton lower most of them).
PRICED_ON = "2026-12-02"
PRICES = {
    "lambda_gb_second": 0.0000166667,
    "lambda_per_million_requests": 0.20,
    # REST API requests per month, in tiers: (up to this many in the month, price per million).
    "api_gateway_rest_tiers": [(333e6, 3.50), (1e9, 2.80), (20e9, 2.38), (math.inf, 1.51)],
    "kinesis_shard_hour": 0.015,
    "kinesis_per_million_put_units": 0.014,  # one unit per 25 KB record
    "elasticache_nodes": {  # node type: (memory GiB, price per hour)
        "cache.r7g.large": (13.07, 0.219),
        "cache.r7g.xlarge": (26.32, 0.437),
        "cache.r7g.2xlarge": (52.82, 0.873),
        "cache.r7g.4xlarge": (105.81, 1.747),
    },
    "s3_gb_month": 0.023,
    "s3_per_thousand_puts": 0.005,
    "step_functions_per_thousand_transitions": 0.025,
}


def api_gateway_monthly(requests: float) -> float:
    cost, counted = 0.0, 0.0
    for upto, per_million in PRICES["api_gateway_rest_tiers"]:
        tier = min(requests, upto) - counted
        if tier <= 0:
            break
        cost += tier / 1e6 * per_million
        counted += tier
    return cost


def lambda_function(
    name: str, invocations_per_s: float, measured: dict[str, Any], round_trips: float
) -> dict[str, Any]:
    """Duration on Lambda: the measured CPU time scaled to the function's vCPU share, plus its Redis round trips
    over the network; concurrency by Little's law at the peak."""
    memory = FUNCTION_MEMORY_MB[name]
    vcpu = min(1.0, memory / LAMBDA_FULL_VCPU_MB)
    duration_ms = measured["cpu_ms_per_request"] / vcpu + round_trips * ASSUMPTIONS["network_round_trip_ms"]
    gb_seconds = invocations_per_s * duration_ms / 1000 * memory / 1024 * SECONDS_PER_MONTH
    cost = (
        gb_seconds * PRICES["lambda_gb_second"]
        + invocations_per_s * SECONDS_PER_MONTH / 1e6 * PRICES["lambda_per_million_requests"]
    )
    return {
        "invocations_per_s": round(invocations_per_s, 1),
        "memory_mb": memory,
        "duration_ms": round(duration_ms, 2),
        "concurrency": math.ceil(invocations_per_s * duration_ms / 1000 * ASSUMPTIONS["peak_factor"]),
        "monthly_usd": round(cost),
    }


def redis_cluster(events_per_s: float, recommends_per_s: float, load: dict[str, Any], memory: dict[str, Any]) -> dict:
    """Shards enough for the data and for Redis' CPU, on the cheapest node type that can hold the one slot that grows
    with traffic (the online buffer's claims, `{olb}:ev:*`)."""
    paths = load["paths"]
    window_seconds = memory["estimate_gib"]["deduplication_window_hours"] * 3600
    hot_slot_bytes = events_per_s * window_seconds * memory["per_event_in_window_single_slot_bytes"]
    data_bytes = (
        ASSUMPTIONS["users"] * memory["per_user_bytes"]
        + ASSUMPTIONS["items"] * memory["per_item_bytes"]
        + events_per_s * window_seconds * memory["per_event_in_window_bytes"]
    )
    per_batch = paths["consumer"]["redis_cpu_ms_per_request"] / ASSUMPTIONS["consumer_batch"]
    cpu = (
        events_per_s * (paths["event"]["redis_cpu_ms_per_request"] + per_batch)
        + recommends_per_s * paths["recommend"]["redis_cpu_ms_per_request"]
    ) / 1000
    shards_for_cpu = math.ceil(cpu * ASSUMPTIONS["peak_factor"] / ASSUMPTIONS["redis_core_budget"])
    choices = []
    for node, (gib, hourly) in PRICES["elasticache_nodes"].items():
        usable = gib * 2**30 * ASSUMPTIONS["redis_usable_memory"]
        if hot_slot_bytes >= usable:
            continue
        # The hot slot's shard gives its other slots to the rest (ElastiCache migrates slots online).
        shards = max(shards_for_cpu, math.ceil(data_bytes / usable), 1)
        nodes = shards * (1 + ASSUMPTIONS["replicas_per_shard"])
        choices.append((nodes * hourly * HOURS_PER_MONTH, node, shards, nodes))
    result: dict[str, Any] = {
        "data_gib": round(data_bytes / 2**30, 1),
        "hot_slot_gib": round(hot_slot_bytes / 2**30, 1),
        "redis_cpu_cores": round(cpu, 2),
    }
    if not choices:  # the single slot outgrows the largest node: the design must change before this level
        return result | {"node_type": None, "shards": None, "nodes": None, "monthly_usd": None}
    cost, node, shards, nodes = min(choices)
    return result | {"node_type": node, "shards": shards, "nodes": nodes, "monthly_usd": round(cost)}


def kinesis(events_per_s: float, record_bytes: float) -> dict[str, Any]:
    peak = events_per_s * ASSUMPTIONS["peak_factor"]
    shards = max(1, math.ceil(peak / 1000), math.ceil(peak * record_bytes / 2**20))
    cost = (
        shards * HOURS_PER_MONTH * PRICES["kinesis_shard_hour"]
        + events_per_s * SECONDS_PER_MONTH / 1e6 * PRICES["kinesis_per_million_put_units"]
    )
    return {"shards": shards, "record_bytes": round(record_bytes), "monthly_usd": round(cost)}


def archive(events_per_s: float, load: dict[str, Any]) -> dict[str, Any]:
    gb_month = events_per_s * SECONDS_PER_MONTH * load["archive_bytes_per_event"] / 1e9
    stored = gb_month * ASSUMPTIONS["archive_months_kept"]  # once the lifecycle keeps a steady year
    puts = events_per_s / ASSUMPTIONS["consumer_batch"] * load["archive_puts_per_batch"] * SECONDS_PER_MONTH
    cost = stored * PRICES["s3_gb_month"] + puts / 1000 * PRICES["s3_per_thousand_puts"]
    return {"gb_per_month": round(gb_month), "puts_per_month": round(puts), "monthly_usd": round(cost)}


def step_functions() -> dict[str, Any]:
    """At most one drift check and one retrain an hour, whatever the traffic: the hourly schedule bounds both."""
    transitions = HOURS_PER_MONTH * (ASSUMPTIONS["drift_check_transitions"] + ASSUMPTIONS["retrain_transitions"])
    return {
        "transitions_per_month": transitions,
        "monthly_usd": round(transitions / 1000 * PRICES["step_functions_per_thousand_transitions"], 2),
    }


def level(requests_per_s: float, inputs: dict[str, Any]) -> dict[str, Any]:
    load, memory = inputs["load"], inputs["redis_memory"]
    paths = load["paths"]
    events = requests_per_s * ASSUMPTIONS["event_share"]
    recommends = requests_per_s - events
    batches = events / ASSUMPTIONS["consumer_batch"]
    functions = {
        "EventFunction": lambda_function("EventFunction", events, paths["event"], paths["event"]["round_trips"]),
        "RecommendFunction": lambda_function(
            "RecommendFunction", recommends, paths["recommend"], paths["recommend"]["round_trips"]
        ),
        "OnlineUpdateFunction": lambda_function(
            "OnlineUpdateFunction", batches, paths["consumer"], paths["consumer"]["round_trips"]
        ),
    }
    stream = kinesis(events, load["record_bytes"])
    consumer = functions["OnlineUpdateFunction"]
    # Each shard's batches go to one invocation at a time per ParallelizationFactor slot.
    stream["parallelization_factor_needed"] = max(1, math.ceil(consumer["concurrency"] / stream["shards"]))
    result = {
        "requests_per_s": requests_per_s,
        "events_per_s": events,
        "recommends_per_s": recommends,
        "lambda": functions,
        "api_gateway": {"monthly_usd": round(api_gateway_monthly(requests_per_s * SECONDS_PER_MONTH))},
        "elasticache": redis_cluster(events, recommends, load, memory),
        "kinesis": stream,
        "s3_archive": archive(events, load),
        "step_functions": step_functions(),
    }
    services = ("api_gateway", "elasticache", "kinesis", "s3_archive", "step_functions")
    parts = [f["monthly_usd"] for f in functions.values()] + [result[name]["monthly_usd"] for name in services]
    # None: a part that cannot be built as designed at this level (see docs/capacity.md), so no total either.
    result["monthly_usd"] = None if None in parts else round(sum(parts))
    return result


def model(inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "priced_on": PRICED_ON,
        "assumptions": ASSUMPTIONS,
        "levels": [level(rate, inputs) for rate in LEVELS],
    }


def markdown(result: dict[str, Any]) -> str:
    levels = result["levels"]
    header = "| | " + " | ".join(f"{lvl['requests_per_s']:,} req/s" for lvl in levels) + " |"
    rows = [header, "|---|" + "---|" * len(levels)]

    def row(label: str, cell: Any) -> None:
        rows.append(f"| {label} | " + " | ".join(cell(lvl) for lvl in levels) + " |")

    row("events/s, recommendations/s", lambda v: f"{v['events_per_s']:,.0f}, {v['recommends_per_s']:,.0f}")
    for name in ("EventFunction", "RecommendFunction", "OnlineUpdateFunction"):
        row(
            f"{name}: duration, peak concurrency",
            lambda v, n=name: f"{v['lambda'][n]['duration_ms']} ms, {v['lambda'][n]['concurrency']:,}",
        )
    row(
        "ElastiCache: data (of it in one slot), Redis CPU",
        lambda v: (
            f"{v['elasticache']['data_gib']} GiB ({v['elasticache']['hot_slot_gib']} GiB), "
            f"{v['elasticache']['redis_cpu_cores']} cores"
        ),
    )
    row("ElastiCache: nodes", _nodes)
    row(
        "Kinesis: shards (ParallelizationFactor)",
        lambda v: f"{v['kinesis']['shards']} ({v['kinesis']['parallelization_factor_needed']})",
    )
    row(
        "S3 archive: GB/month, PUTs/month",
        lambda v: f"{v['s3_archive']['gb_per_month']:,}, {v['s3_archive']['puts_per_month']:,}",
    )
    row("Step Functions: transitions/month", lambda v: f"{v['step_functions']['transitions_per_month']:,}")
    for label, key in (
        ("API Gateway (REST)", "api_gateway"),
        ("ElastiCache", "elasticache"),
        ("Kinesis", "kinesis"),
        ("S3 archive (a year kept)", "s3_archive"),
    ):
        row(f"$/month {label}", lambda v, k=key: _usd(v[k]["monthly_usd"]))
    row("$/month Lambda", lambda v: f"{sum(f['monthly_usd'] for f in v['lambda'].values()):,}")
    row("**$/month total**", lambda v: f"**{_usd(v['monthly_usd'])}**")
    return "\n".join(rows)


def _nodes(level: dict[str, Any]) -> str:
    redis = level["elasticache"]
    if redis["node_type"] is None:
        return "none: the one slot outgrows every node"
    return f"{redis['shards']} shards x {1 + ASSUMPTIONS['replicas_per_shard']} {redis['node_type']}"


def _usd(amount: float | None) -> str:
    return "n/a" if amount is None else f"{amount:,}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=Path, default=DEFAULT_INPUTS)
    parser.add_argument("--markdown", action="store_true", help="the table of docs/capacity.md")
    parser.add_argument("--json", action="store_true", help="the whole model as JSON (the default)")
    args = parser.parse_args()
    result = model(json.loads(args.inputs.read_text()))
    print(markdown(result) if args.markdown else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
