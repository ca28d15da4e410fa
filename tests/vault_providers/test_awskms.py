"""AWS KMS-specific behaviour, against moto's KMS served over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.vault_providers.providers import KMS_REGION, kms_uri, unique_name
from vault.awskms import AwsKmsProvider, KmsUri
from vault.errors import KekProviderError

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

OpenKms = Callable[[], Awaitable[AwsKmsProvider]]
AAD = b"tenant-1/integration-42"


@pytest.fixture
def kms(moto_kms: str, aws_credentials: None) -> KMSClient:
    """A plain boto3 client on the same moto server: the test's own view of what KMS holds."""
    return boto3.session.Session().client("kms", region_name=KMS_REGION, endpoint_url=moto_kms)


def alias_of(provider: AwsKmsProvider) -> str:
    return provider.kek_id.removeprefix("aws-kms:")


def version_aliases(kms: KMSClient, alias: str) -> dict[str, str]:
    aliases = kms.list_aliases()["Aliases"]
    return {
        a["AliasName"]: a["TargetKeyId"]
        for a in aliases
        if a["AliasName"].startswith(f"{alias}-v") and "TargetKeyId" in a
    }


async def test_versions_are_kms_keys_behind_numbered_aliases(
    open_kms: OpenKms, kms: KMSClient
) -> None:
    provider = await open_kms()
    alias = alias_of(provider)
    await provider.rotate()

    keys = version_aliases(kms, alias)
    assert sorted(keys) == [f"{alias}-v1", f"{alias}-v2"]
    meta = kms.describe_key(KeyId=keys[f"{alias}-v2"])["KeyMetadata"]
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert "Calendar Gateway" in meta.get("Description", "")
    assert [v.created_at is not None for v in await provider.versions()] == [True, True]

    await provider.retire(1)
    assert kms.describe_key(KeyId=keys[f"{alias}-v1"])["KeyMetadata"]["KeyState"] == "Disabled"


async def test_wrapped_key_is_a_kms_blob_bound_by_encryption_context(
    open_kms: OpenKms, kms: KMSClient
) -> None:
    provider = await open_kms()
    dek = os.urandom(32)
    wrapped = await provider.wrap(dek, AAD)

    # The documented format, opened by a client that knows nothing of the provider.
    context = {"kek-version": "1", "aad": "b64:" + base64.b64encode(AAD).decode()}
    opened = kms.decrypt(CiphertextBlob=wrapped.wrapped, EncryptionContext=context)
    assert opened["Plaintext"] == dek
    with pytest.raises(kms.exceptions.InvalidCiphertextException):
        kms.decrypt(CiphertextBlob=wrapped.wrapped, EncryptionContext={**context, "aad": "b64:"})


async def test_losing_a_version_creation_race_adopts_the_winner(
    open_kms: OpenKms, kms: KMSClient
) -> None:
    # Two replicas opening an empty alias at once both create a key for v1; CreateAlias lets
    # one win. Replay the loser's side: its key must be scheduled for deletion, not left live.
    provider = await open_kms()
    alias = alias_of(provider)
    winner = version_aliases(kms, alias)[f"{alias}-v1"]

    await asyncio.to_thread(provider._create_version_sync, 1)

    assert version_aliases(kms, alias) == {f"{alias}-v1": winner}
    ours = [
        meta
        for key in kms.list_keys()["Keys"]
        if (meta := kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"])
        and meta.get("Description", "").startswith(f"Calendar Gateway KEK {alias}-v1 ")
    ]
    assert sorted(m["KeyState"] for m in ours) == ["Enabled", "PendingDeletion"]
    assert await provider.primary_version() == 1


async def test_cached_versions_expire_on_the_injected_clock(
    open_kms: OpenKms, moto_kms: str, aws_credentials: None
) -> None:
    writer = await open_kms()
    now = [0.0]
    reader = await AwsKmsProvider.from_uri(
        kms_uri(moto_kms, alias_of(writer).removeprefix("alias/")),
        clock=lambda: now[0],
        cache_ttl_s=30.0,
    )
    try:
        await writer.rotate()
        assert await reader.primary_version() == 1  # cached
        now[0] = 29.0
        assert await reader.primary_version() == 1
        now[0] = 31.0
        assert await reader.primary_version() == 2
        # An unknown version is looked up at once, not after the TTL.
        await writer.rotate()
        v3 = await writer.wrap(b"k" * 32, AAD)
        assert await reader.unwrap(v3, AAD) == b"k" * 32
    finally:
        await reader.close()


@pytest.fixture
def private_moto() -> Iterator[ThreadedMotoServer]:
    """A moto server of this test's own, so it can be stopped."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield server
    server.stop()  # idempotent enough: a stopped server's shutdown() returns at once


async def test_a_stopped_kms_raises_provider_error_quickly(
    private_moto: ThreadedMotoServer, aws_credentials: None
) -> None:
    host, port = private_moto.get_host_and_port()
    # Refused once stopped, whatever the timeouts: they only have to outlast a slow moto.
    uri = kms_uri(
        f"http://{host}:{port}", unique_name(), "connect-timeout=5&read-timeout=30&max-attempts=1"
    )
    provider = await AwsKmsProvider.from_uri(uri)
    try:
        wrapped = await provider.wrap(os.urandom(32), AAD)
        private_moto.stop()
        with pytest.raises(KekProviderError, match="AWS KMS Decrypt failed") as caught:
            await provider.unwrap(wrapped, AAD)
        assert "testing" not in str(caught.value)
    finally:
        await provider.close()


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """Accepts TCP connections and never answers: the hung-KMS case."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


async def test_a_hung_kms_times_out_instead_of_hanging(
    silent_endpoint: str, aws_credentials: None
) -> None:
    uri = kms_uri(
        silent_endpoint, unique_name(), "connect-timeout=1&read-timeout=0.5&max-attempts=1"
    )
    # The endpoint never answers: only the read timeout can end the call (and this test).
    with pytest.raises(KekProviderError, match="ReadTimeoutError"):
        await AwsKmsProvider.from_uri(uri)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("aws-kms://key/1234abcd", "must look like aws-kms://alias/<name>"),
        ("aws-kms://alias/", "must look like"),
        ("aws-kms://alias/aws/ebs", "not start with aws/"),
        ("aws-kms://alias/cg?aws_secret_access_key=abc123", "unsupported parameters"),
        ("aws-kms://alias/cg?endpoint=file:///etc/passwd", "http:// or https://"),
        ("aws-kms://alias/cg?read-timeout=soon", "must be numbers"),
    ],
)
async def test_bad_uris_are_refused_before_any_request(uri: str, message: str) -> None:
    with pytest.raises(KekProviderError, match=message) as caught:
        await AwsKmsProvider.from_uri(uri)
    assert "abc123" not in str(caught.value)


def test_uri_forms_and_defaults() -> None:
    full = KmsUri.parse(
        "aws-kms://alias/team/cg?region=eu-west-1&endpoint=http://127.0.0.1:5000"
        "&connect-timeout=2&read-timeout=4.5&max-attempts=5"
    )
    assert full == KmsUri(
        alias="alias/team/cg",
        region="eu-west-1",
        endpoint="http://127.0.0.1:5000",
        connect_timeout_s=2.0,
        read_timeout_s=4.5,
        max_attempts=5,
    )
    assert KmsUri.parse("aws-kms:alias/cg") == KmsUri(alias="alias/cg")


async def test_missing_region_is_a_provider_error(
    aws_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(KekProviderError, match="NoRegionError"):
        await AwsKmsProvider.from_uri("aws-kms://alias/cg")


async def test_repr_shows_no_credentials(open_kms: OpenKms) -> None:
    provider = await open_kms()
    assert repr(provider) == f"AwsKmsProvider(kek_id={provider.kek_id!r}, region='{KMS_REGION}')"
