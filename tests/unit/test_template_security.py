"""What template.yaml lets through: Redis only over TLS outside the local profile, egress to Redis only where it is,
listing only under named prefixes, no account-wide Kinesis listing, a cache that refuses writes rather than evict."""

from __future__ import annotations

from typing import Any

import pytest
from cfnlint.decode import decode

from tests.support.environment import ROOT


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, problems = decode(str(ROOT / "template.yaml"))
    assert not problems, problems
    return decoded


def evaluate(expression: Any, template: dict[str, Any], parameters: dict[str, str]) -> Any:
    """The few intrinsic functions the template's conditions use, as CloudFormation evaluates them."""
    if not isinstance(expression, dict):
        return expression
    ((function, argument),) = expression.items()
    if function == "Ref":
        return parameters.get(argument, template["Parameters"][argument].get("Default"))
    if function == "Condition":
        return evaluate(template["Conditions"][argument], template, parameters)
    values = [evaluate(a, template, parameters) for a in argument] if isinstance(argument, list) else None
    match function:
        case "Fn::Equals":
            return values[0] == values[1]
        case "Fn::Not":
            return not values[0]
        case "Fn::Or":
            return any(values)
        case "Fn::And":
            return all(values)
        case "Fn::Split":
            return values[1].split(values[0])
        case "Fn::Select":
            return values[1][int(values[0])]
        case "Fn::Join":
            return values[0].join(values[1])
    raise NotImplementedError(function)


@pytest.mark.parametrize(
    ("profile", "url", "accepted"),
    [
        ("production", "rediss://cache.example:6379", True),
        ("production", "", True),  # the template creates a TLS cache
        ("production", "redis://cache.example:6379", False),
        ("production", "unix:///tmp/redis.sock", False),
        ("local", "redis://127.0.0.1:6379/0", True),
    ],
)
def test_a_plaintext_redis_url_is_refused_outside_the_local_profile(template, profile, url, accepted) -> None:
    guard = template["Resources"]["RedisUrlMustUseTlsOutsideLocalProfile"]
    assert "RedisUrlMustUseTlsOutsideLocalProfile" in template["Resources"]["InteractionStream"]["DependsOn"]
    parameters = {"DeploymentProfile": profile, "RedisUrl": url}
    assert evaluate({"Condition": guard["Condition"]}, template, parameters) is accepted


def test_egress_to_redis_goes_only_to_the_cache_or_the_named_range(template) -> None:
    resources = template["Resources"]
    inline = resources["FunctionSecurityGroup"]["Properties"]["SecurityGroupEgress"]
    assert all(rule["FromPort"] == 443 and rule["ToPort"] == 443 for rule in inline)
    redis_rules = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::EC2::SecurityGroupEgress"]
    assert redis_rules and all(rule["FromPort"] == rule["ToPort"] == 6379 for rule in redis_rules)
    targets = [rule.get("DestinationSecurityGroupId") or rule.get("CidrIp") for rule in redis_rules]
    assert {"Ref": "RedisSecurityGroup"} in targets and {"Ref": "RedisEgressCidr"} in targets
    assert "0.0.0.0/0" not in targets


def statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    """Every IAM statement of the template: roles, managed policies and SAM function policies."""
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "Effect" in node and "Action" in node:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(template["Resources"])
    return found


def actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def test_every_listing_of_the_data_bucket_is_limited_to_named_prefixes(template) -> None:
    """The data bucket holds the registry, checkpoints and every event; each function lists only its prefixes.
    (The failed-records bucket holds nothing else, so its listing is the bucket.)"""
    listings = [s for s in statements(template) if "s3:ListBucket" in actions(s) and "DataBucket" in str(s["Resource"])]
    assert len(listings) >= 3
    for statement in listings:
        prefixes = statement.get("Condition", {}).get("StringLike", {}) | statement.get("Condition", {}).get(
            "StringEquals", {}
        )
        assert "s3:prefix" in prefixes, statement


def test_no_role_may_list_every_stream_of_the_account(template) -> None:
    assert not [s for s in statements(template) if any(a in ("kinesis:ListStreams", "kinesis:*") for a in actions(s))]


def test_the_created_cache_refuses_writes_rather_than_evict(template) -> None:
    groups = [r for r in template["Resources"].values() if r["Type"] == "AWS::ElastiCache::ParameterGroup"]
    assert [g["Properties"]["Properties"]["maxmemory-policy"] for g in groups] == ["noeviction"]
    alarms = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert any("DatabaseMemoryUsagePercentage" in str(alarm) for alarm in alarms)  # operators act before it fills


def test_authentication_may_be_off_only_in_the_local_profile(template) -> None:
    rule = template["Rules"]["ApiAuthOffOnlyLocally"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "ApiAuth"}, ""]}
    assert rule["Assertions"][0]["Assert"] == {"Fn::Equals": [{"Ref": "DeploymentProfile"}, "local"]}
