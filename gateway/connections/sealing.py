"""Sealing and opening an integration's Google tokens: the one place that does either.

A token is sealed by the vault under the context (tenant id, integration id, purpose), the
purpose being `PURPOSE_ACCESS_TOKEN` or `PURPOSE_REFRESH_TOKEN` (model.py): a blob moved to
another integration's row, or from one column to the other, does not open. The connect flow
seals what a code exchange gave, the TokenManager what a refresh gave and opens both tokens,
the disconnect opens the refresh token to revoke it; all of them through these two functions.

Plain tokens exist only in memory, between Google and the vault: never in a log line, a repr
(`TokenGrant` and `SealedTokens` redact themselves) or an exception message.
"""

from __future__ import annotations

from datetime import datetime

from gateway.connections.model import PURPOSE_ACCESS_TOKEN, PURPOSE_REFRESH_TOKEN
from gateway.connections.repository import SealedTokens
from gateway.google.oauth_client import TokenGrant
from vault.envelope import SealContext
from vault.service import Vault


async def seal_grant(
    vault: Vault,
    tenant_id: str,
    integration_id: str,
    grant: TokenGrant,
    *,
    expires_at: datetime | None,
) -> SealedTokens:
    """The grant's tokens sealed for the integration (whose data key must exist). The refresh
    token is None when the grant has none (a refresh that did not rotate it: the stored one
    stays)."""
    access = await vault.seal(
        SealContext(tenant_id, integration_id, PURPOSE_ACCESS_TOKEN),
        grant.access_token.encode("utf-8"),
    )
    refresh = (
        await vault.seal(
            SealContext(tenant_id, integration_id, PURPOSE_REFRESH_TOKEN),
            grant.refresh_token.encode("utf-8"),
        )
        if grant.refresh_token is not None
        else None
    )
    return SealedTokens(
        refresh_token=refresh, access_token=access, access_token_expires_at=expires_at
    )


async def open_token(
    vault: Vault, tenant_id: str, integration_id: str, purpose: str, blob: bytes
) -> str:
    """The token sealed in `blob` for the integration and `purpose`. Raises the vault's errors
    (`InvalidCiphertext` when it does not open, `KekProviderError`/`KeyringError` when the key
    provider cannot be reached)."""
    plaintext = await vault.open(SealContext(tenant_id, integration_id, purpose), blob)
    return plaintext.decode("utf-8")
