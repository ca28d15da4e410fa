"""The demo's steps, in order, each printed as it happens (see `gateway/demo/__init__.py`).

Every step goes over HTTP as the real callers would: the agent's backend calls the gateway's
API with an API key, the user's browser follows the OAuth redirects, and "Google's side" is the
emulator's control API. Rotating the key-encryption key is an operator's action: it runs the
same vault functions as `calendar-gateway keys rotate` and `keys rewrap`.

A step that does not get what it needs raises DemoFailed: the demo stops there, prints why and
the gateway log's last lines, and the command exits non-zero.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.padding import Padding
from sqlalchemy import select

from gateway.commands import keys_status_table
from gateway.db.schema import integrations, vault_data_keys
from gateway.demo import render
from gateway.demo.errors import DemoFailed
from gateway.demo.evidence import count_in_files
from gateway.demo.seeding import SeedEvent, next_monday, seed_week, work_week
from gateway.demo.stack import RETURN_URL, TENANT, DemoStack
from gateway.demo.walk import Api, Google, Reply, browse, display_url, query_params
from gateway.wiring import open_vault

log = logging.getLogger(__name__)

USER_EMAIL = "demo.rep@example.com"  # one of the emulator's demo users; consents
USER_TIME_ZONE = "Europe/Berlin"  # that user's time zone at the emulator
USER_ID = "rep-1"  # the agent's own id for the user
BOOKED_SUMMARY = "Intro call: Ada Lovelace (Analytical Engines Ltd)"
GUEST = "ada@analytical-engines.example"
MEETING_MINUTES = 30
WORKING_HOURS = {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
WAIT_S = 20.0  # longest wait for something the gateway does in the background

# The step titles, in order (a test checks the output names each).
STEPS = (
    "Start Google (emulator) and the gateway",
    "Connect a user: the OAuth redirect chain",
    "Initial sync of the user's calendar",
    "The week's busy time",
    f"Slots for a {MEETING_MINUTES}-minute meeting",
    "Book it, then replay the same request",
    "A change on Google's side arrives by push",
    "Rotate the key-encryption key and rewrap",
    "Disconnect: destroy the tokens",
)
NEXT_TITLE = "What to run next"

T = TypeVar("T")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _spans(freebusy: Any) -> list[render.Span]:
    return [(_parse(b["start"]), _parse(b["end"])) for b in freebusy["busy"]]


def _covered(span: render.Span, busy: Sequence[render.Span]) -> bool:
    """Whether `span` lies wholly inside busy time (busy intervals are merged)."""
    return any(s <= span[0] and span[1] <= e for s, e in busy)


def _touched(span: render.Span, busy: Sequence[render.Span]) -> bool:
    return any(s < span[1] and span[0] < e for s, e in busy)


async def _eventually(
    check: Callable[[], Awaitable[T | None]], what: str, timeout_s: float = WAIT_S
) -> T:
    """Poll `check` until it returns something; DemoFailed naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise DemoFailed(f"{what} did not happen within {timeout_s:.0f} s")
        await asyncio.sleep(0.1)


# Google grants `email` and `profile` under their long names too: the same permission twice.
_SCOPE_ALIASES = {"email": "userinfo.email", "profile": "userinfo.profile"}


def scope_names(scopes: list[str]) -> str:
    """Granted scopes for reading: their last path segment, each permission once."""
    names = (s.rsplit("/", 1)[-1] for s in scopes)
    return ", ".join(sorted({_SCOPE_ALIASES.get(n, n) for n in names}))


@dataclass
class Demo:
    """One run of the walk-through against a running stack."""

    console: Console
    stack: DemoStack
    api: Api
    google: Google
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo(USER_TIME_ZONE))
    monday: date = field(default_factory=lambda: next_monday(date.today()))
    events: list[SeedEvent] = field(default_factory=list)
    event_ids: dict[str, str] = field(default_factory=dict)
    integration_id: str = ""
    slot: dict[str, Any] | None = None  # the slot the agent picks (step 5) and books (step 6)
    tokens_seen: set[str] = field(default_factory=set)

    # -- helpers ------------------------------------------------------------------------

    @property
    def days(self) -> list[date]:
        return [self.monday + timedelta(days=n) for n in range(5)]

    def at(self, day: date, hh: int, mm: int = 0) -> datetime:
        return datetime(day.year, day.month, day.day, hh, mm, tzinfo=self.tz)

    @property
    def week(self) -> tuple[datetime, datetime]:
        return self.at(self.monday, 0), self.at(self.monday + timedelta(days=5), 0)

    async def freebusy(self, day: date | None = None, **params: str) -> Reply:
        start, end = self.week if day is None else (self.at(day, 0), self.at(day, 23, 59))
        return await self.api.call(
            "GET",
            f"/v1/integrations/{self.integration_id}/freebusy",
            params={"time_min": start.isoformat(), "time_max": end.isoformat(), **params},
        )

    async def integration(self) -> dict[str, Any]:
        reply = await self.api.call("GET", f"/v1/integrations/{self.integration_id}")
        return dict(reply.body)

    def show(self, title: str, *rows: tuple[str, str]) -> None:
        if title:
            render.note(self.console, title)
        render.key_values(self.console, rows)

    # -- the steps ----------------------------------------------------------------------

    async def run(self) -> None:
        steps = (
            self.start,
            self.connect,
            self.initial_sync,
            self.busy_week,
            self.slots,
            self.book,
            self.push,
            self.rotate_keys,
            self.disconnect,
        )
        for number, (title, step) in enumerate(zip(STEPS, steps, strict=True), start=1):
            render.heading(self.console, number, title)
            await step()
        self.what_next()

    async def start(self) -> None:
        stack = self.stack
        # Google only delivers push notifications to https; the emulator makes an exception
        # for loopback when told to. Small pages make the initial sync page through.
        await self.google.call(
            "POST",
            "/calendar/settings",
            {"allowInsecureLoopbackWebhooks": True, "maxPageItems": 3},
        )
        self.show(
            "",
            ("scratch folder", str(stack.workdir)),
            ("Google (emulator)", f"{stack.google_url}  OAuth 2.0 + Calendar v3, local"),
            ("gateway", f"{stack.gateway_url}  SQLite gateway.db, local keyring keyring.json"),
            ("API key", f"tenant {TENANT!r}, every scope (as `calendar-gateway api-keys create`)"),
        )
        self.events = work_week(self.monday, USER_TIME_ZONE, USER_EMAIL)
        self.event_ids = await seed_week(self.google, USER_EMAIL, self.events)
        render.note(
            self.console,
            f"{USER_EMAIL} already has a calendar at Google: the week of "
            f"{self.monday:%a %d %b %Y} ({USER_TIME_ZONE}), put in through the emulator's "
            "control API:",
        )
        render.table(
            self.console,
            ("day", "time", "event", "availability should say"),
            [
                (
                    e.repeats or f"{e.day:%a %d}",
                    f"{e.start:%H:%M}-{e.end:%H:%M}" if e.start and e.end else "all day",
                    e.summary,
                    e.expect,
                )
                for e in self.events
            ],
        )

    async def connect(self) -> None:
        reply = await self.api.call(
            "POST",
            "/v1/connect-sessions",
            json_body={"user_id": USER_ID, "return_url": RETURN_URL, "login_hint": USER_EMAIL},
            expect=(201,),
        )
        render.http_line(
            self.console,
            "POST",
            "/v1/connect-sessions",
            reply.status,
            "the agent's backend asks for a connect URL",
        )
        hops, final = await browse(self.api.http, reply.body["connect_url"], until=RETURN_URL)
        render.note(self.console, "The user's browser follows it, one redirect at a time:")
        roles = ["Google's consent screen", "the gateway's OAuth callback"]
        for n, hop in enumerate(hops):
            role = roles[n] if n < len(roles) else "a redirect"
            render.note(
                self.console, f"{role}: GET {display_url(hop.url)} -> {hop.status}", indent=4
            )
        render.note(self.console, f"back at the agent's app: {display_url(final)}", indent=4)
        params = query_params(final)
        if params.get("status") != "connected" or "integration_id" not in params:
            raise DemoFailed(f"the connection failed: {display_url(final)}")
        self.integration_id = params["integration_id"]
        found = await self.integration()
        render.http_line(self.console, "GET", f"/v1/integrations/{self.integration_id}", 200)
        self.show(
            "",
            ("status", found["status"]),
            ("Google account", str(found["google_email"])),
            ("capabilities", ", ".join(found["capabilities"])),
            ("scopes granted", scope_names(found["granted_scopes"])),
            ("tokens", "sealed in the vault (AES-256-GCM under a per-user data key)"),
        )

    async def initial_sync(self) -> None:
        render.note(
            self.console,
            "The gateway's scheduler finds the new calendar and copies its busy time "
            "(events.list, page by page):",
        )
        started = time.monotonic()

        async def pages() -> int:
            found = await self.google.call(
                "GET", f"/requests?endpoint=events.list&user={USER_EMAIL}"
            )
            return len(found)

        calendars: list[dict[str, Any]] = []
        with render.progress(self.console, "Google pages read") as bar:
            task = bar.add_task("sync", total=None)
            deadline = started + WAIT_S
            while True:
                calendars = (await self.integration())["sync"]["calendars"]
                done = await pages()
                if calendars and all(c["state"] == "synced" for c in calendars):
                    bar.update(task, completed=done, total=done)
                    break
                bar.update(task, completed=done)
                if time.monotonic() > deadline:
                    raise DemoFailed(f"the initial sync did not finish within {WAIT_S:.0f} s")
                await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        render.note(
            self.console,
            f"synced {len(calendars)} calendar in {elapsed:.1f} s; only ids, times, status and "
            "transparency are kept (no titles, no attendees)",
        )
        await _eventually(self._push_active, "opening the push channel")
        render.note(
            self.console,
            f"push channel open and verified: Google will POST to "
            f"{self.stack.settings.push_webhook_url} on every change",
        )

    async def _push_active(self) -> str | None:
        calendars = (await self.integration())["sync"]["calendars"]
        ok = calendars and all(c["push"] == "active" for c in calendars)
        return "active" if ok else None

    async def busy_week(self) -> None:
        reply = await self.freebusy()
        body = reply.body
        render.http_line(
            self.console,
            "GET",
            f"/v1/integrations/{self.integration_id}/freebusy",
            reply.status,
            f"source {body['source']}, complete {str(body['complete']).lower()}",
        )
        busy = _spans(body)
        self.console.print()
        render.timeline(self.console, self.days, self.tz, busy)
        self._check_week(busy)

    def _check_week(self, busy: Sequence[render.Span]) -> None:
        """The timeline must say what each seeded event should make of it."""
        wrong: list[str] = []
        for event in self.events:
            if event.start is None or event.end is None:
                span = (self.at(event.day, 0), self.at(event.day + timedelta(days=1), 0))
                spans = [span]
            elif event.key == "standup":
                spans = [
                    (
                        self.at(d, event.start.hour, event.start.minute),
                        self.at(d, event.end.hour, event.end.minute),
                    )
                    for d in self.days
                ]
            else:
                spans = [
                    (
                        self.at(event.day, event.start.hour, event.start.minute),
                        self.at(event.day, event.end.hour, event.end.minute),
                    )
                ]
            for span in spans:
                if event.expect.startswith("busy") and not _covered(span, busy):
                    wrong.append(f"{event.summary} should be busy")
                if event.expect.startswith("free") and _touched(span, busy):
                    wrong.append(f"{event.summary} should be free")
        if wrong:
            raise DemoFailed("availability disagrees with the calendar: " + "; ".join(wrong))
        render.note(
            self.console,
            "[green]matches the calendar[/green]: the declined invitation and the transparent "
            "focus time are free, the standup repeats, the offsite blocks Friday",
        )

    async def slots(self) -> None:
        start, end = self.week
        reply = await self.api.call(
            "POST",
            "/v1/slots",
            json_body={
                "integration_ids": [self.integration_id],
                "mode": "all",
                "duration_minutes": MEETING_MINUTES,
                "time_min": start.isoformat(),
                "time_max": end.isoformat(),
                "time_zone": USER_TIME_ZONE,
                "working_hours": WORKING_HOURS,
                "granularity_minutes": 30,
                "limit": 200,
            },
        )
        body = reply.body
        found = body["slots"]
        render.http_line(
            self.console,
            "POST",
            "/v1/slots",
            reply.status,
            f"{len(found)} slots, complete {str(body['complete']).lower()}",
        )
        by_day: dict[date, list[str]] = {d: [] for d in self.days}
        for slot in found:
            local = _parse(slot["start"]).astimezone(self.tz)
            by_day.setdefault(local.date(), []).append(f"{local:%H:%M}")
        render.table(
            self.console,
            ("day", f"{MEETING_MINUTES}-minute slots (start, 09:00-17:00 {USER_TIME_ZONE})"),
            [(f"{d:%a %d %b}", ", ".join(t) or "none") for d, t in by_day.items()],
        )
        if not found:
            raise DemoFailed("no slot was found in a week that has free time")
        # The agent picks one: the first that starts at 11:00 or later (a realistic choice).
        later = [s for s in found if _parse(s["start"]).astimezone(self.tz).hour >= 11]
        self.slot = (later or found)[0]

    async def book(self) -> None:
        assert self.slot is not None
        start, end = _parse(self.slot["start"]), _parse(self.slot["end"])
        path = f"/v1/integrations/{self.integration_id}/events"
        body = {
            "summary": BOOKED_SUMMARY,
            "description": "Booked by the AI sales agent through calendar-gateway.",
            "start": self.slot["start"],
            "end": self.slot["end"],
            "time_zone": USER_TIME_ZONE,
            "attendees": [{"email": GUEST}],
            "if_free": True,
        }
        headers = {"Idempotency-Key": f"demo-{uuid.uuid4()}"}
        render.note(
            self.console,
            f"The agent books {start.astimezone(self.tz):%a %d %b %H:%M}-"
            f"{end.astimezone(self.tz):%H:%M} (if_free: checked against fresh availability):",
        )
        first = await self.api.call("POST", path, json_body=body, headers=headers, expect=(201,))
        render.http_line(
            self.console,
            "POST",
            path,
            first.status,
            f"Idempotency-Key: {headers['Idempotency-Key']}",
        )
        replay = await self.api.call(
            "POST", path, json_body=body, headers=headers, expect=(200, 201)
        )
        render.http_line(self.console, "POST", path, replay.status, "the same request again")
        replayed = replay.headers.get("Idempotent-Replayed", "")
        render.table(
            self.console,
            ("request", "status", "event id", "Idempotent-Replayed"),
            [
                (
                    "first",
                    str(first.status),
                    first.body["id"],
                    first.headers.get("Idempotent-Replayed", "-"),
                ),
                ("replay", str(replay.status), replay.body["id"], replayed or "-"),
            ],
        )
        if replay.body["id"] != first.body["id"] or replayed.lower() != "true":
            raise DemoFailed("the replayed booking was not answered with the same event")
        inserts = await self.google.call(
            "GET", f"/requests?endpoint=events.insert&user={USER_EMAIL}"
        )
        created = [r for r in inserts if r.get("status") == 200]
        if len(created) != 1:
            raise DemoFailed(f"Google created {len(created)} events for one booking")
        render.note(
            self.console,
            "[green]Google created one event[/green] (its request log shows one events.insert): "
            "a retry after a timeout never books twice",
        )
        booked = (start, end)

        async def visible() -> list[render.Span] | None:
            busy = _spans((await self.freebusy(start.astimezone(self.tz).date())).body)
            return busy if _covered(booked, busy) else None

        busy = await _eventually(visible, "the booking showing in freebusy")
        day = start.astimezone(self.tz).date()
        render.timeline(self.console, [day], self.tz, busy, highlight=[booked])

    async def push(self) -> None:
        moved = next(e for e in self.events if e.key == "umbrella")
        assert moved.start is not None and moved.end is not None
        day = moved.day
        old = (self.at(day, moved.start.hour), self.at(day, moved.end.hour))
        new = (self.at(day, 16), self.at(day, 17))
        before = _spans((await self.freebusy(day)).body)
        render.note(self.console, "Before:")
        render.timeline(self.console, [day], self.tz, before)
        sent_before = len(await self.google.deliveries())
        render.note(
            self.console,
            f"In Google Calendar, {moved.summary!r} moves from {old[0]:%H:%M} to {new[0]:%H:%M} "
            "(PATCH through the emulator's control API)",
        )
        changed_at = time.monotonic()
        await self.google.call(
            "PATCH",
            f"/calendar/calendars/{USER_EMAIL}/events/{self.event_ids['umbrella']}",
            {
                "start": {"dateTime": new[0].isoformat(), "timeZone": USER_TIME_ZONE},
                "end": {"dateTime": new[1].isoformat(), "timeZone": USER_TIME_ZONE},
            },
        )

        async def updated() -> tuple[Reply, list[render.Span]] | None:
            reply = await self.freebusy(day)
            busy = _spans(reply.body)
            # From the synced copy, updated by the sync the notification asked for (a live
            # answer from Google would prove nothing about push).
            done = reply.body["source"] == "cache" and _covered(new, busy)
            return (reply, busy) if done and not _touched(old, busy) else None

        reply, after = await _eventually(updated, "the change reaching availability")
        elapsed = time.monotonic() - changed_at

        async def delivered() -> list[dict[str, Any]] | None:
            # The emulator records a delivery once the webhook's answer is read.
            sent = (await self.google.deliveries())[sent_before:]
            ok = any(d["state"] == "exists" and d["status"] == 200 for d in sent)
            return sent if ok else None

        deliveries = await _eventually(delivered, "the push notification's delivery", 5.0)
        for d in deliveries:
            render.note(
                self.console,
                f"  Google -> POST /webhooks/google/calendar  "
                f"(message {d['message_number']}, state {d['state']}) -> {d['status']}",
            )
        render.note(
            self.console,
            f"availability changed {elapsed:.1f} s after the edit (source {reply.body['source']}; "
            f"without push the next poll would be {self.stack.settings.sync_poll_interval_s} s "
            "away). After:",
        )
        render.timeline(self.console, [day], self.tz, after, highlight=[new])

    async def rotate_keys(self) -> None:
        render.note(
            self.console,
            "An operator's action (the same as `calendar-gateway keys rotate` and "
            "`keys rewrap`), while the gateway keeps serving:",
        )
        vault = await open_vault(self.stack.settings, self.stack.engine)
        try:
            version = await vault.rotate()
            render.note(self.console, f"KEK version {version} is now primary")
            with render.progress(self.console, "rewrapping data keys") as bar:
                task = bar.add_task("rewrap", total=None)

                def report(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                result = await vault.rewrap(batch_size=100, progress=report)
            render.note(
                self.console,
                f"rewrapped {result.rewrapped} data key(s); the sealed tokens were not touched",
            )
            status = await vault.status()
            listing = keys_status_table(status)
            listing.title = None
            render.note(self.console, f"calendar-gateway keys status (KEK {status.kek_id}):")
            self.console.print(Padding(listing, (0, 0, 0, 2)))
        finally:
            await vault.close()
        export = await self.api.call("GET", f"/v1/integrations/{self.integration_id}/export")
        key = export.body["data_key"]
        render.http_line(
            self.console,
            "GET",
            f"/v1/integrations/{self.integration_id}/export",
            export.status,
            f"data key now wrapped by KEK version {key['kek_version']}",
        )
        if key["kek_version"] != version:
            raise DemoFailed("the user's data key was not rewrapped under the new KEK")
        # Beyond the synced horizon the gateway must ask Google live: a call with the user's
        # access token, opened under the rewrapped data key.
        far = self.monday + timedelta(days=self.stack.settings.sync_horizon_future_days + 7)
        live = await self.freebusy(far)
        render.http_line(
            self.console,
            "GET",
            f"/v1/integrations/{self.integration_id}/freebusy",
            live.status,
            f"{far:%d %b %Y}, beyond the synced year: source {live.body['source']} "
            "(asked Google live with the user's token)",
        )
        if live.body["source"] != "google":
            raise DemoFailed("the gateway did not ask Google after the rotation")

    async def _sealed_bytes(self) -> tuple[list[bytes], list[bytes]]:
        """The sealed tokens and the wrapped data key as stored, to look for in the file."""
        async with self.stack.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(integrations.c.refresh_token, integrations.c.access_token).where(
                        integrations.c.id == self.integration_id
                    )
                )
            ).one()
            wrapped = (
                await conn.execute(
                    select(vault_data_keys.c.wrapped).where(
                        vault_data_keys.c.integration_id == self.integration_id
                    )
                )
            ).scalars()
            return [bytes(b) for b in row if b], [bytes(b) for b in wrapped]

    async def _scan(self, sealed: list[bytes], wrapped: list[bytes]) -> dict[str, int]:
        return await count_in_files(
            self.stack.database_files,
            {
                "tokens Google issued (plain text)": [t.encode() for t in self.tokens_seen],
                "sealed tokens (ciphertext)": sealed,
                "the user's wrapped data key": wrapped,
                "the user's email address": [USER_EMAIL.encode()],
                "the booked meeting (title, guest)": [BOOKED_SUMMARY.encode(), GUEST.encode()],
            },
        )

    async def disconnect(self) -> None:
        self.tokens_seen |= await self.google.issued_tokens(USER_EMAIL)
        sealed, wrapped = await self._sealed_bytes()
        before = await self._scan(sealed, wrapped)
        path = f"/v1/integrations/{self.integration_id}"

        async def finished() -> Reply | None:
            reply = await self.api.call("DELETE", path, expect=(200, 202))
            return reply if reply.status == 200 else None

        reply = await _eventually(finished, "the disconnect")
        render.http_line(self.console, "DELETE", path, reply.status, "the destruction receipt:")
        body = dict(reply.body)
        signed = body.pop("receipt", None)
        rows = [(k, str(v)) for k, v in body.items()]
        if isinstance(signed, dict):
            key_id = signed.get("receipt", {}).get("key_id")
            rows.append(("signed", f"Ed25519 by {key_id} (public keys: GET /v1/receipts/keys)"))
        render.key_values(self.console, rows)
        self.tokens_seen |= await self.google.issued_tokens(USER_EMAIL)
        after = await self._scan(sealed, wrapped)
        files = ", ".join(p.name for p in self.stack.database_files if p.exists())
        render.note(
            self.console,
            f"Scanning the bytes of {files} for {len(self.tokens_seen)} token values "
            "the emulator issued, and for what the database held for this user:",
        )
        render.table(
            self.console,
            ("looked for", "hits before", "hits after"),
            [(label, str(before[label]), str(after[label])) for label in before],
        )
        left = [label for label, hits in after.items() if hits]
        if left:
            raise DemoFailed("the database files still hold: " + ", ".join(left))
        if not self.tokens_seen:
            raise DemoFailed("the emulator reported no issued token to look for")
        render.note(
            self.console,
            "[green]nothing left[/green]: the tokens were never in the file in plain text "
            "(sealed from the start); now they are revoked at Google, their ciphertext deleted "
            "and their data key destroyed (crypto-shredding)",
        )

    def what_next(self) -> None:
        self.console.print()
        self.console.rule(f"[bold]{NEXT_TITLE}", align="left")
        render.key_values(
            self.console,
            [
                (
                    "run it for real",
                    "./scripts/run serve   (calendar-gateway serve --migrate: ./var/gateway.db, "
                    "./var/keyring.json; settings in .env, see .env.example)",
                ),
                (
                    "an API key",
                    "./scripts/run api-keys create --tenant acme --scopes "
                    "connections:read,connections:write,calendar:read,calendar:write",
                ),
                (
                    "by hand, no Google",
                    "calendar-gateway emulator --port 8085, then README 'Trying it with the "
                    "emulator'",
                ),
                (
                    "the API docs",
                    "GET /openapi.json on the gateway (gateway/openapi.json); README "
                    "'Connecting a Google Calendar' and 'Availability API'",
                ),
                (
                    "agents (MCP)",
                    "POST /mcp with the API key, or calendar-gateway mcp --stdio with "
                    "CALENDAR_GATEWAY_URL and CALENDAR_GATEWAY_API_KEY; README 'MCP'",
                ),
                (
                    "operators",
                    "calendar-gateway keys status | rotate | rewrap | retire; README 'Token vault'",
                ),
                ("the tests", "./scripts/test"),
            ],
        )
