"""Real back ends for the HSM and KMS KEK providers: a SoftHSM2 token and a moto KMS server.

SoftHSM reads SOFTHSM2_CONF when the module is initialised, and python-pkcs11 loads a module
once per process; a token created after that is invisible until the module is re-initialised.
So the session creates one token in a temporary token directory before anything loads the module,
and each test gets its own KEK name (`object=`) inside it: versions are per KEK name, so tests
cannot see each other's keys.

moto runs as a real HTTP server on a free port of 127.0.0.1; providers reach it through the
URI's `endpoint=` with dummy credentials that exist only for the test.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pkcs11
import pytest
from moto.server import ThreadedMotoServer
from pkcs11.exceptions import NoSuchToken

from tests.support.services import require_softhsm
from tests.vault_providers.providers import (
    SO_PIN,
    TOKEN_LABEL,
    USER_PIN,
    ProviderFactory,
    SoftHsmToken,
    kms_uri,
    unique_name,
)
from vault.awskms import AwsKmsProvider
from vault.pkcs11_provider import Pkcs11Provider


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsmToken]:
    module_path = require_softhsm()
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [
            *("softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL),
            *("--so-pin", SO_PIN, "--pin", USER_PIN),
        ],
        check=True,
        capture_output=True,
    )
    lib = pkcs11.lib(module_path)
    try:
        lib.get_token(token_label=TOKEN_LABEL)
    except NoSuchToken:
        # Something in this process loaded SoftHSM before us (other conf, or before the token
        # existed): re-initialising makes it read SOFTHSM2_CONF and rescan the token directory.
        lib.reinitialize()
    yield SoftHsmToken(module_path=module_path, label=TOKEN_LABEL, pin=USER_PIN)
    if previous is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = previous


@pytest.fixture(scope="session")
def moto_kms() -> Iterator[str]:
    """The endpoint URL of a moto server (all services; we use KMS) on a free local port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials for this test only; no real profile, config or instance role."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
async def open_pkcs11(
    softhsm_token: SoftHsmToken,
) -> AsyncIterator[Callable[..., Awaitable[Pkcs11Provider]]]:
    """Opens providers on one fresh KEK name in the test token; closes them all afterwards."""
    name = unique_name()
    opened: list[Pkcs11Provider] = []

    async def open_provider(**query: str) -> Pkcs11Provider:
        provider = await Pkcs11Provider.from_uri(
            softhsm_token.uri(name, **query), pin=softhsm_token.pin
        )
        opened.append(provider)
        return provider

    yield open_provider
    for provider in opened:
        await provider.close()


@pytest.fixture
async def open_kms(
    moto_kms: str, aws_credentials: None
) -> AsyncIterator[Callable[[], Awaitable[AwsKmsProvider]]]:
    """Opens providers on one fresh alias in the moto server; closes them all afterwards."""
    uri = kms_uri(moto_kms, unique_name())
    opened: list[AwsKmsProvider] = []

    async def open_provider() -> AwsKmsProvider:
        provider = await AwsKmsProvider.from_uri(uri)
        opened.append(provider)
        return provider

    yield open_provider
    for provider in opened:
        await provider.close()


@pytest.fixture(params=["pkcs11", "aws-kms"])
def open_provider(request: pytest.FixtureRequest) -> ProviderFactory:
    """For the contract tests: opens another provider instance on the same KEK each call.

    The back end is requested lazily so that a missing SoftHSM skips only the pkcs11 half.
    """
    if request.param == "pkcs11":
        factory: ProviderFactory = request.getfixturevalue("open_pkcs11")
    else:
        factory = request.getfixturevalue("open_kms")
    return factory
