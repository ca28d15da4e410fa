"""Managing a tenant's webhook endpoints, and opening their signing secrets for the worker.

A secret is shown once, in the answer that creates or rotates it. It is stored sealed by the
vault, like OAuth tokens, under a data key of the endpoint's own (the endpoint id stands where
an integration id stands for tokens): the gateway must sign with it, so it cannot be hashed,
and deleting the endpoint destroys the key, which crypto-shreds the secret.
"""

from __future__ import annotations

import secrets as _secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.clock import utc_now
from gateway.webhooks.destinations import DestinationPolicy, Resolve, check_url, checked_addresses
from gateway.webhooks.errors import DestinationRefused, EndpointNotFound, UnsafeDestination
from gateway.webhooks.model import (
    DisabledReason,
    Endpoint,
    EndpointState,
    new_endpoint_id,
)
from gateway.webhooks.signing import new_secret
from gateway.webhooks.store import WebhookStore
from vault.envelope import SealContext
from vault.service import Vault

PURPOSE_WEBHOOK_SECRET = "webhook_secret"  # noqa: S105 (a seal purpose label, no secret)
ROTATION_OVERLAP = timedelta(hours=24)


@dataclass(frozen=True)
class CreatedSecret:
    endpoint: Endpoint
    secret: str = field(repr=False)


class EndpointService:
    def __init__(
        self,
        store: WebhookStore,
        vault: Vault,
        policy: DestinationPolicy,
        resolve: Resolve,
        *,
        clock: Callable[[], datetime] = utc_now,
        token_bytes: Callable[[int], bytes] = _secrets.token_bytes,
    ) -> None:
        self._store = store
        self._vault = vault
        self._policy = policy
        self._resolve = resolve
        self._clock = clock
        self._token_bytes = token_bytes

    def now(self) -> datetime:
        return self._clock()

    async def check_destination(self, url: str) -> None:
        """Refuse a URL that is not https or resolves to an address we must not call."""
        target = check_url(url, self._policy)
        try:
            await checked_addresses(target, self._policy, self._resolve)
        except DestinationRefused as exc:
            raise UnsafeDestination(f"url: {exc.message}", extra={"field": "url"}) from None

    async def _seal(self, tenant_id: str, endpoint_id: str, secret: str) -> bytes:
        return await self._vault.seal(
            SealContext(tenant_id, endpoint_id, PURPOSE_WEBHOOK_SECRET), secret.encode("ascii")
        )

    async def create(
        self, tenant_id: str, url: str, events: Sequence[str], description: str | None
    ) -> CreatedSecret:
        await self.check_destination(url)
        endpoint_id = new_endpoint_id()
        secret = new_secret(self._token_bytes)
        await self._vault.ensure_data_key(tenant_id, endpoint_id)
        now = self._clock()
        endpoint = Endpoint(
            id=endpoint_id,
            tenant_id=tenant_id,
            url=url,
            description=description,
            events=frozenset(events),
            state=EndpointState.ENABLED,
            disabled_reason=None,
            failing_since=None,
            previous_until=None,
            created_at=now,
            updated_at=now,
            secret=await self._seal(tenant_id, endpoint_id, secret),
        )
        await self._store.insert_endpoint(endpoint)
        return CreatedSecret(endpoint, secret)

    async def get(self, tenant_id: str, endpoint_id: str) -> Endpoint:
        endpoint = await self._store.get_endpoint(tenant_id, endpoint_id)
        if endpoint is None:
            raise EndpointNotFound("no such webhook endpoint")
        return endpoint

    async def update(
        self,
        tenant_id: str,
        endpoint_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> Endpoint:
        await self.get(tenant_id, endpoint_id)
        values: dict[str, object] = {"updated_at": self._clock()}
        if url is not None:
            await self.check_destination(url)
            values["url"] = url
        if events is not None:
            values["events"] = " ".join(sorted(set(events)))
        if description is not None:
            values["description"] = description
        if enabled is True:
            # Enabled again: the failure streak starts over, pending deliveries resume.
            values.update(
                state=EndpointState.ENABLED.value, disabled_reason=None, failing_since=None
            )
        elif enabled is False:
            values.update(
                state=EndpointState.DISABLED.value, disabled_reason=DisabledReason.BY_REQUEST.value
            )
        await self._store.update_endpoint(tenant_id, endpoint_id, **values)
        return await self.get(tenant_id, endpoint_id)

    async def rotate(self, tenant_id: str, endpoint_id: str) -> CreatedSecret:
        """A new secret; the current one keeps signing alongside it for 24 hours."""
        current = await self.get(tenant_id, endpoint_id)
        secret = new_secret(self._token_bytes)
        now = self._clock()
        await self._store.update_endpoint(
            tenant_id,
            endpoint_id,
            secret=await self._seal(tenant_id, endpoint_id, secret),
            previous_secret=current.secret,
            previous_until=now + ROTATION_OVERLAP,
            updated_at=now,
        )
        return CreatedSecret(await self.get(tenant_id, endpoint_id), secret)

    async def delete(self, tenant_id: str, endpoint_id: str) -> None:
        if not await self._store.delete_endpoint(tenant_id, endpoint_id):
            raise EndpointNotFound("no such webhook endpoint")
        await self._vault.destroy(tenant_id, endpoint_id)

    async def signing_secrets(self, endpoint: Endpoint, now: datetime) -> list[str]:
        """The secrets that sign a delivery now: the current one, and the previous one while
        its overlap lasts."""
        ctx = SealContext(endpoint.tenant_id, endpoint.id, PURPOSE_WEBHOOK_SECRET)
        out = [(await self._vault.open(ctx, endpoint.secret)).decode("ascii")]
        if (
            endpoint.previous_secret is not None
            and endpoint.previous_until is not None
            and now < endpoint.previous_until
        ):
            out.append((await self._vault.open(ctx, endpoint.previous_secret)).decode("ascii"))
        return out
