"""The control and inspection API under /_emulator/, driven over HTTP like an outside test would."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from emulator.server import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_REDIRECT_URIS, run_emulator
from tests.support.emulator import (
    ALICE,
    BOB,
    CALENDAR,
    CALENDAR_READONLY,
    START_EPOCH_S,
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    RunningEmulator,
)

NEW_REDIRECT = "http://localhost:9999/cb"


async def control(
    emulator: RunningEmulator,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    **params: str,
) -> tuple[int, Any]:
    async with http.request(
        method, emulator.url("/_emulator" + path), json=body, params=params or None
    ) as r:
        return r.status, await r.json()


async def refresh(
    emulator: RunningEmulator,
    http: aiohttp.ClientSession,
    refresh_token: str,
    client: tuple[str, str] = (TEST_CLIENT_ID, TEST_CLIENT_SECRET),
) -> tuple[int, dict[str, Any]]:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": client[0],
        "client_secret": client[1],
    }
    async with http.post(emulator.url("/token"), data=form) as r:
        return r.status, await r.json()


async def userinfo_status(
    emulator: RunningEmulator, http: aiohttp.ClientSession, token: str
) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(emulator.url("/v1/userinfo"), headers=headers) as r:
        return r.status


async def tokens_via_api(
    emulator: RunningEmulator, http: aiohttp.ClientSession, user: str, **body: Any
) -> dict[str, Any]:
    status, issued = await control(emulator, http, "POST", f"/users/{user}/tokens", body)
    assert status == 201, issued
    return dict(issued)


async def test_health(emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
    assert await control(emulator, http, "GET", "/health") == (200, {"ok": True})


async def test_register_client_and_user_then_sign_in_over_http(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    client = {"client_id": "new-app", "client_secret": "s3", "redirect_uris": [NEW_REDIRECT]}
    assert (await control(emulator, http, "POST", "/clients", client))[0] == 201
    user = {"sub": "42", "email": "dave@example.com", "time_zone": "Asia/Tokyo"}
    status, created = await control(emulator, http, "POST", "/users", user)
    assert status == 201
    assert created["consent"] == "grant" and created["time_zone"] == "Asia/Tokyo"
    params = {
        "client_id": "new-app",
        "redirect_uri": NEW_REDIRECT,
        "response_type": "code",
        "scope": CALENDAR,
        "login_hint": "dave@example.com",
    }
    async with http.get(
        emulator.url("/o/oauth2/v2/auth"), params=params, allow_redirects=False
    ) as r:
        assert r.status == 302
        code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": NEW_REDIRECT,
        "client_id": "new-app",
        "client_secret": "s3",
    }
    async with http.post(emulator.url("/token"), data=form) as r:
        assert r.status == 200


async def test_scripting_a_users_consent(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    status, user = await control(
        emulator,
        http,
        "PATCH",
        f"/users/{ALICE.email}",
        {"consent": "partial", "partial_scopes": [CALENDAR_READONLY]},
    )
    assert status == 200 and user["partial_scopes"] == [CALENDAR_READONLY]
    params = {
        "client_id": TEST_CLIENT_ID,
        "redirect_uri": emulator.client.redirect_uris[0],
        "response_type": "code",
        "scope": f"{CALENDAR} {CALENDAR_READONLY}",
    }
    async with http.get(
        emulator.url("/o/oauth2/v2/auth"), params=params, allow_redirects=False
    ) as r:
        assert parse_qs(urlsplit(r.headers["Location"]).query)["scope"] == [CALENDAR_READONLY]
    assert (await control(emulator, http, "PATCH", f"/users/{ALICE.sub}", {"consent": "no"}))[
        0
    ] == 400
    assert (await control(emulator, http, "GET", "/users/nobody@example.com"))[0] == 404


async def test_token_lifetime_and_clock_control_expire_tokens(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    status, settings = await control(
        emulator, http, "PATCH", "/settings", {"access_token_lifetime_s": 60}
    )
    assert status == 200 and settings["access_token_lifetime_s"] == 60
    issued = await tokens_via_api(emulator, http, ALICE.email, scopes=["openid"])
    assert issued["expires_in"] == 60
    assert await userinfo_status(emulator, http, issued["access_token"]) == 200
    status, clock = await control(emulator, http, "POST", "/clock", {"advance_s": 60})
    assert clock["now_s"] == START_EPOCH_S + 60
    assert await userinfo_status(emulator, http, issued["access_token"]) == 401
    status, clock = await control(emulator, http, "POST", "/clock", {"now": "2027-01-01T00:00:00Z"})
    assert clock["now"] == "2027-01-01T00:00:00Z"
    assert (await control(emulator, http, "POST", "/clock", {"advance_s": "soon"}))[0] == 400


async def test_revoke_from_googles_side_and_list_revoked_grants(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    issued = await tokens_via_api(emulator, http, ALICE.email, scopes=["openid", CALENDAR])
    kept = await tokens_via_api(emulator, http, BOB.email, scopes=["openid"])
    status, result = await control(emulator, http, "POST", f"/users/{ALICE.email}/revoke")
    assert status == 200 and len(result["revoked"]) == 1
    assert await userinfo_status(emulator, http, issued["access_token"]) == 401
    assert await userinfo_status(emulator, http, kept["access_token"]) == 200
    assert (await refresh(emulator, http, issued["refresh_token"]))[1] == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }
    _, revoked = await control(emulator, http, "GET", "/grants", revoked="true")
    assert [(g["email"], g["revoked_by"]) for g in revoked] == [(ALICE.email, "user")]
    assert revoked[0]["refresh_token"] == issued["refresh_token"]
    assert issued["access_token"] in revoked[0]["access_tokens"]


async def test_refresh_rotation_over_the_api(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    issued = await tokens_via_api(emulator, http, ALICE.sub)
    status, _ = await control(
        emulator, http, "POST", "/refresh-rotation", {"user": ALICE.email, "times": 1}
    )
    assert status == 200
    _, body = await refresh(emulator, http, issued["refresh_token"])
    assert body["refresh_token"] != issued["refresh_token"]
    assert (await refresh(emulator, http, issued["refresh_token"]))[0] == 400
    _, grants = await control(emulator, http, "GET", "/grants", user=ALICE.sub)
    assert grants[0]["retired_refresh_tokens"] == [issued["refresh_token"]]


async def test_request_log_is_filterable_and_resettable(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    alice = await tokens_via_api(emulator, http, ALICE.email, scopes=["openid"])
    bob = await tokens_via_api(emulator, http, BOB.email, scopes=["openid"])
    await userinfo_status(emulator, http, alice["access_token"])
    await userinfo_status(emulator, http, bob["access_token"])
    await userinfo_status(emulator, http, "ya29.bogus")
    await refresh(emulator, http, alice["refresh_token"])
    await refresh(emulator, http, "1//bogus")

    _, everything = await control(emulator, http, "GET", "/requests")
    assert [r["endpoint"] for r in everything] == ["userinfo"] * 3 + ["token"] * 2
    assert all("/_emulator" not in r["path"] for r in everything)
    _, alices = await control(emulator, http, "GET", "/requests", user=ALICE.email)
    assert [(r["endpoint"], r["status"], r["grant_type"]) for r in alices] == [
        ("userinfo", 200, None),
        ("token", 200, "refresh_token"),
    ]
    _, failed = await control(emulator, http, "GET", "/requests", status="401")
    assert [r["user"] for r in failed] == [None]
    since = everything[2]["seq"]
    _, later = await control(emulator, http, "GET", "/requests", since=str(since))
    assert len(later) == 2

    _, counts = await control(emulator, http, "GET", "/token-calls")
    assert counts == {"": {"refresh_token": 1}, ALICE.sub: {"refresh_token": 1}}
    assert (await control(emulator, http, "DELETE", "/requests"))[0] == 200
    assert await control(emulator, http, "GET", "/requests") == (200, [])
    assert await control(emulator, http, "GET", "/token-calls") == (200, {})


async def test_request_log_is_bounded(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    await control(emulator, http, "PATCH", "/settings", {"request_log_size": 3})
    for _ in range(5):
        await userinfo_status(emulator, http, "ya29.bogus")
    _, records = await control(emulator, http, "GET", "/requests")
    assert [r["seq"] for r in records] == [3, 4, 5]


async def test_reset_forgets_faults_log_and_rotations_but_not_people(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.state.inject_fault(status=500)
    emulator.state.rotate_refresh_token_next()
    await userinfo_status(emulator, http, "ya29.bogus")
    assert await control(emulator, http, "POST", "/reset") == (200, {"ok": True})
    assert emulator.state.faults.pending() == []
    assert emulator.state.inspector.requests() == []
    assert not emulator.state.take_rotation(ALICE.sub)
    assert ALICE.sub in emulator.state.users and TEST_CLIENT_ID in emulator.state.clients


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/users", {"email": "x@example.com"}),
        ("POST", "/clients", {"client_id": "c"}),
        ("PATCH", "/settings", {"access_token_lifetime_s": 0}),
        ("PATCH", "/settings", {"merge_earlier_grants": "yes"}),
        ("POST", "/clock", {}),
        ("POST", "/refresh-rotation", {"times": 0}),
    ],
)
async def test_malformed_control_requests_are_400(
    emulator: RunningEmulator,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: dict[str, Any],
) -> None:
    status, answer = await control(emulator, http, method, path, body)
    assert status == 400 and "error" in answer


async def test_run_emulator_serves_the_demo_client_until_cancelled(
    http: aiohttp.ClientSession,
) -> None:
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    printed: list[str] = []
    task = asyncio.create_task(
        run_emulator("127.0.0.1", 0, started=started.set_result, announce=printed.append)
    )
    try:
        base = await asyncio.wait_for(started, 60)
        assert DEMO_CLIENT_ID in printed[0] and DEMO_CLIENT_SECRET in printed[0]
        async with http.get(base + "/_emulator/users") as r:
            users = await r.json()
        assert [u["consent"] for u in users] == ["grant", "deny", "partial"]
        params = {
            "client_id": DEMO_CLIENT_ID,
            "redirect_uri": DEMO_REDIRECT_URIS[0],
            "response_type": "code",
            "scope": CALENDAR,
        }
        async with http.get(base + "/o/oauth2/v2/auth", params=params, allow_redirects=False) as r:
            assert r.status == 302 and "code=" in r.headers["Location"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_testing_app_refresh_tokens_die_after_their_lifetime(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    week_s = 7 * 24 * 3600
    _, settings = await control(
        emulator, http, "PATCH", "/settings", {"refresh_token_lifetime_s": week_s}
    )
    assert settings["refresh_token_lifetime_s"] == week_s
    issued = await tokens_via_api(emulator, http, ALICE.email)
    await control(emulator, http, "POST", "/clock", {"advance_s": week_s - 1})
    assert (await refresh(emulator, http, issued["refresh_token"]))[0] == 200
    await control(emulator, http, "POST", "/clock", {"advance_s": 1})
    assert (await refresh(emulator, http, issued["refresh_token"]))[1] == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }
