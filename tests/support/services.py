"""Finding the real services tests need (PostgreSQL, SoftHSM2).

A missing service skips the test with a visible reason locally, and fails it when CI=true: in CI
every test must really run.
"""

from __future__ import annotations

import os
import shutil
import socket
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
SOFTHSM_LIB_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(name: str, available: bool, how: str) -> None:
    """Skip (locally) or fail (CI=true) when a required service is missing."""
    if available:
        return
    message = f"{name} is not available: {how}"
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)


def postgres_url() -> str:
    """The libpq-style URL of the test PostgreSQL (GATEWAY_TEST_POSTGRES_URL)."""
    return os.environ.get("GATEWAY_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@cache
def postgres_reachable() -> bool:
    parts = urlsplit(postgres_url())
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            return True
    except OSError:
        return False


def require_postgres() -> str:
    require(
        "PostgreSQL",
        postgres_reachable(),
        f"nothing answers at {postgres_url()} (set GATEWAY_TEST_POSTGRES_URL)",
    )
    return postgres_url()


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def require_chromium() -> tuple[str, str]:
    """Debian's chromium and chromium-driver (no browser download): (browser, driver)."""
    require(
        "Chromium",
        Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(),
        "install Debian's chromium and chromium-driver packages",
    )
    return CHROMIUM, CHROMEDRIVER


def softhsm_library() -> str | None:
    """Path of libsofthsm2.so (GATEWAY_TEST_SOFTHSM_LIB, else the usual Debian places)."""
    configured = os.environ.get("GATEWAY_TEST_SOFTHSM_LIB")
    if configured:
        return configured if Path(configured).exists() else None
    return next((p for p in SOFTHSM_LIB_CANDIDATES if Path(p).exists()), None)


def require_softhsm() -> str:
    lib = softhsm_library()
    require(
        "SoftHSM2",
        lib is not None and shutil.which("softhsm2-util") is not None,
        "install Debian's softhsm2 package or set GATEWAY_TEST_SOFTHSM_LIB",
    )
    assert lib is not None
    return lib
