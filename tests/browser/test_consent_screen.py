"""The connect flow in a real browser: headless Chromium (Debian's, driven by selenium) goes from
the connect URL to the emulator's consent screen, decides there as a person would, and lands on
the app's return URL with the outcome.

The emulator shows its consent screen to users whose consent is `ask`; the gateway and emulator
run in this test's event loop, so every blocking WebDriver call runs in a thread."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from tests.support.services import require_chromium
from tests.support.stack import EmulatorSecrets, Stack, start_stack

# One Google account per decision: Google remembers earlier grants of the same client.
PEOPLE = {
    "all": "ann@example.com",
    "read": "ben@example.com",
    "none": "cid@example.com",
    "cancel": "dee@example.com",
}
FREEBUSY = "https://www.googleapis.com/auth/calendar.events.freebusy"
OWNED = "https://www.googleapis.com/auth/calendar.events.owned"
# Screenshots a reviewer can open after the run (ignored by git).
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", Path(__file__).parents[2] / "test-artifacts"))


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    binary, driver_path = require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1000,800")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def app_site() -> AsyncIterator[str]:
    """The agent's app: the page users land on after connecting (the return URL)."""
    app = web.Application()

    async def landed(_request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><p>back at the app</p>", content_type="text/html")

    app.router.add_get("/connected", landed)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("/connected"))
    finally:
        await server.close()


@pytest.fixture
async def browser_stack(
    tmp_path: Path, app_site: str, emulator_secrets: EmulatorSecrets
) -> AsyncIterator[Stack]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    engine: AsyncEngine = await create_engine(url)
    await upgrade(engine)
    origin = app_site.rsplit("/", 1)[0] + "/"
    try:
        async for running in start_stack(
            engine, url, tmp_path, emulator_secrets=emulator_secrets, allowed_return_urls=[origin]
        ):
            for n, email in enumerate(PEOPLE.values()):
                running.google.add_user(f"30000000000000000000{n}", email, consent="ask")
            yield running
    finally:
        await engine.dispose()


async def connect_url(stack: Stack, who: str, return_url: str) -> str:
    body = {"user_id": f"u-{who}", "return_url": return_url, "login_hint": PEOPLE[who]}
    async with stack.http.post(
        stack.url("/v1/connect-sessions"), json=body, headers=stack.auth()
    ) as response:
        assert response.status == 201, await response.text()
        return str((await response.json())["connect_url"])


async def decide(
    browser: webdriver.Chrome,
    who: str,
    url: str,
    landing: str,
    *,
    untick: tuple[str, ...] = (),
    button: str = "allow",
    screenshot: Path | None = None,
) -> dict[str, str]:
    """Open the connect URL, answer the consent screen, and return the parameters of the app's
    page (`landing`) the browser ends on."""

    def in_browser() -> tuple[str, list[str], str]:
        browser.get(url)
        account = browser.find_element(By.ID, "account").text
        boxes = browser.find_elements(By.CSS_SELECTOR, "input[name=scope]")
        offered = [str(b.get_attribute("value")) for b in boxes]
        for box in boxes:
            if box.get_attribute("value") in untick:
                box.click()
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            assert browser.save_screenshot(str(screenshot))
        browser.find_element(By.ID, button).click()
        # The click starts a navigation (consent -> the gateway's callback -> the app): wait
        # for its end, the app's page, not for a time.
        WebDriverWait(browser, 60).until(lambda d: d.current_url.startswith(landing))
        return account, offered, browser.current_url

    account, offered, landed = await asyncio.to_thread(in_browser)
    assert account == PEOPLE[who]
    assert sorted(offered) == sorted([FREEBUSY, OWNED])  # sign-in scopes are not offered
    return {k: v[0] for k, v in parse_qs(urlsplit(landed).query).items()}


async def capabilities(stack: Stack, integration_id: str) -> list[str]:
    async with stack.http.get(
        stack.url(f"/v1/integrations/{integration_id}"), headers=stack.auth()
    ) as response:
        return list((await response.json())["capabilities"])


async def test_a_person_decides_on_the_consent_screen(
    browser_stack: Stack, browser: webdriver.Chrome, app_site: str
) -> None:
    stack = browser_stack
    everything = await decide(
        browser,
        "all",
        await connect_url(stack, "all", app_site),
        app_site,
        screenshot=ARTIFACTS / "consent-screen.png",
    )
    assert everything["status"] == "connected", everything
    assert await capabilities(stack, everything["integration_id"]) == ["availability", "booking"]
    assert (ARTIFACTS / "consent-screen.png").stat().st_size > 0

    read_only = await decide(
        browser, "read", await connect_url(stack, "read", app_site), app_site, untick=(OWNED,)
    )
    assert read_only["status"] == "connected", read_only
    assert await capabilities(stack, read_only["integration_id"]) == ["availability"]

    nothing = await decide(
        browser,
        "none",
        await connect_url(stack, "none", app_site),
        app_site,
        untick=(FREEBUSY, OWNED),
    )
    assert nothing["status"] == "error" and nothing["error"] == "insufficient_scope", nothing
    assert "integration_id" not in nothing

    cancelled = await decide(
        browser, "cancel", await connect_url(stack, "cancel", app_site), app_site, button="cancel"
    )
    assert cancelled["status"] == "error" and cancelled["error"] == "access_denied", cancelled
