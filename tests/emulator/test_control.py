"""Control API tests."""

from __future__ import annotations

import aiohttp

from tests.emulator.conftest import ALICE, RunningEmulator


async def test_health_and_token_helper(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.get(emulator.url("/_emulator/health")) as r:
        assert r.status == 200
    token = emulator.token_for(ALICE, ["openid", "email"])
    async with http.get(
        emulator.url("/v1/userinfo"), headers={"Authorization": f"Bearer {token}"}
    ) as r:
        assert r.status == 200
        assert (await r.json())["email"] == ALICE.email
