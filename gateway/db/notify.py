"""Telling every cache of a database's rows that a row changed: versions, NOTIFY, local fan-out.

    await bump_calendars(conn, [calendar_id])    # inside the write's transaction
    await bump_integration(conn, integration_id) # status or set of calendars changed
    await key_revoked(conn, key_id)
    feed_for(engine).subscribe(cache)            # a cache of this engine's rows

Versions. `calendars.version` and `integrations.version` count the changes of what availability
answers from (a calendar's busy blocks and freshness; an integration's status and calendars);
`calendars.blocks_version` is the version of the last change to the blocks themselves.
The bump runs in the writer's transaction, so a reader that sees the new data sees the new
version with it. A cache keeps the version it read and refuses to keep anything older than
the newest version it was told of (its floor).

Delivery. Inside the transaction, (1) PostgreSQL is asked to `NOTIFY` channel `gateway_cache`
with the change, which it delivers to every listening process when, and only if, the
transaction commits (gateway.db.listener listens): for a calendar or an integration by the
database itself, a trigger on the version column (migration 0015; it was a statement of the
writer's own, one round trip more per write), for a key or a fence by `publish`; and (2) this
process's subscribers are told at once, before the commit. Telling early is safe because of
the floor: a reader that loads the row before the commit reads the old version, below the
floor, and does not keep it; after the commit it reads the new version. A rolled-back change
leaves a floor the row will reach at its next change; until then the row is read from the
database (correct, only slower). A revoked key needs no version: revocation is final, so the
id itself is the floor.

Payloads (one line of ASCII, far below NOTIFY's 8000-byte limit):
    c <calendar_id> <integration_id> <version>    a calendar's blocks or freshness changed
    i <integration_id> <version>                  an integration's status or calendars changed
    k <key_id>                                    an API key was revoked
    f <token>                                     a fence: everything sent before it has arrived

The feed of an engine is found through the engine (a weak mapping), so the writers (stores and
repositories built from an engine in many places) need no extra argument.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sqlalchemy import Engine, bindparam, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.db.direct import Direct
from gateway.db.schema import calendars, integrations
from gateway.db.transactions import commit_if_changed

log = logging.getLogger(__name__)

CHANNEL = "gateway_cache"

ChangeKind = Literal["calendar", "integration", "key", "fence"]


@dataclass(frozen=True, slots=True)
class Change:
    """One change as subscribers see it (see the payloads in the module doc)."""

    kind: ChangeKind
    id: str
    integration_id: str | None = None
    version: int = 0

    def payload(self) -> str:
        if self.kind == "calendar":
            return f"c {self.id} {self.integration_id} {self.version}"
        if self.kind == "integration":
            return f"i {self.id} {self.version}"
        if self.kind == "key":
            return f"k {self.id}"
        return f"f {self.id}"


def parse(payload: str) -> Change | None:
    """The change a payload names, or None for one this code does not know (a newer peer)."""
    parts = payload.split(" ")
    try:
        if parts[0] == "c" and len(parts) == 4:
            return Change("calendar", parts[1], parts[2], int(parts[3]))
        if parts[0] == "i" and len(parts) == 3:
            return Change("integration", parts[1], None, int(parts[2]))
        if parts[0] == "k" and len(parts) == 2:
            return Change("key", parts[1])
        if parts[0] == "f" and len(parts) == 2:
            return Change("fence", parts[1])
    except ValueError:
        pass
    return None


class Subscriber(Protocol):
    """A cache of database rows (the availability index, the API-key cache)."""

    def changed(self, change: Change) -> None:
        """Drop what `change` makes old (called before and after the commit: be idempotent)."""

    def reset(self, *, usable: bool) -> None:
        """Drop everything. `usable=False`: answer nothing from memory until reset(usable=True)
        (changes may be missed meanwhile: the LISTEN connection is down)."""

    async def external_write(self) -> None:
        """Another connection committed to the database file (SQLite: the CLI beside `serve`,
        or this process's own pool, which the watcher cannot tell apart): drop, or check
        again, what another program may have changed."""


class ChangeFeed:
    """This process's subscribers to one engine's changes."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def deliver(self, change: Change) -> None:
        for subscriber in list(self._subscribers):
            subscriber.changed(change)

    def reset(self, *, usable: bool) -> None:
        for subscriber in list(self._subscribers):
            subscriber.reset(usable=usable)

    async def external_write(self) -> None:
        for subscriber in list(self._subscribers):
            await subscriber.external_write()


_NOTIFY_EACH = text("SELECT pg_notify(:c, p) FROM unnest(CAST(:ps AS text[])) AS p")

_FEEDS: weakref.WeakKeyDictionary[Engine, ChangeFeed] = weakref.WeakKeyDictionary()


def feed_for(engine: AsyncEngine | Engine) -> ChangeFeed:
    """The feed of `engine` (created on first use, gone with the engine)."""
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    feed = _FEEDS.get(sync)
    if feed is None:
        feed = _FEEDS[sync] = ChangeFeed()
    return feed


# Changes PostgreSQL's triggers NOTIFY by themselves: an UPDATE that bumps the version did it.
_BY_TRIGGER = frozenset({"calendar", "integration"})


async def publish(conn: AsyncConnection, changes: Sequence[Change]) -> None:
    """NOTIFY `changes` at the commit of `conn`'s transaction (PostgreSQL: calendars and
    integrations only from the UPDATE that bumped their version in it, whose trigger sends
    them), and tell this process's subscribers now (see the module doc for why now is safe)."""
    if not changes:
        return
    if conn.dialect.name == "postgresql":
        payloads = [c.payload() for c in changes if c.kind not in _BY_TRIGGER]
        if payloads:
            await conn.execute(_NOTIFY_EACH, {"c": CHANNEL, "ps": payloads})
    feed = feed_for(conn.engine)
    for change in changes:
        feed.deliver(change)


# What an UPDATE that bumps calendars returns for `publish_calendars`.
CALENDAR_CHANGE = (calendars.c.id, calendars.c.integration_id, calendars.c.version)


def calendar_bump(*, blocks: bool = True) -> dict[str, Any]:
    """The values that increment a calendar's version, for an UPDATE the writer runs anyway
    (one statement less than `bump_calendars`: on SQLite every statement inside a write
    transaction is time the one writer is held). The UPDATE must return `CALENDAR_CHANGE`,
    and its rows go to `publish_calendars`. `blocks`: as in `bump_calendars`."""
    bumped = calendars.c.version + 1
    return {"version": bumped, "blocks_version": bumped} if blocks else {"version": bumped}


async def publish_calendars(conn: AsyncConnection, rows: Iterable[Sequence[Any]]) -> None:
    """Publish the calendars an UPDATE with `calendar_bump` returned (`CALENDAR_CHANGE`)."""
    await publish(conn, [Change("calendar", str(c), str(i), int(v)) for c, i, v in rows])


async def bump_calendars(
    conn: AsyncConnection, calendar_ids: Iterable[str], *, blocks: bool = True, last: bool = False
) -> None:
    """Increment the version of each calendar in the caller's transaction and publish it.
    `blocks=False` says the write changed only the calendar's freshness (a sync requested,
    claimed or failed; a push channel's state), not its busy blocks: `blocks_version` stays,
    so a cache may keep the blocks it read at that blocks_version. When in doubt, True.
    `last`: the bump is the transaction's last statement (`commit_if_changed`)."""
    ids = sorted(set(calendar_ids))
    if not ids:
        return
    statement = (
        update(calendars)
        .where(calendars.c.id.in_(ids))
        .values(**calendar_bump(blocks=blocks))
        .returning(*CALENDAR_CHANGE)
    )
    result = await commit_if_changed(conn, statement, last=last)
    await publish_calendars(conn, result.all())


# Every new calendar's discovery runs it (on PostgreSQL by asyncpg itself: gateway.db.direct).
_BUMP_INTEGRATION = Direct(
    update(integrations)
    .where(integrations.c.id == bindparam("bumped_integration", type_=integrations.c.id.type))
    .values(version=integrations.c.version + 1)
    .returning(integrations.c.version)
)


async def bump_integration(
    conn: AsyncConnection, integration_id: str, *, last: bool = False
) -> None:
    """Increment the integration's version in the caller's transaction and publish it.
    `last`: the bump is the transaction's last statement (`commit_if_changed`)."""
    result = await commit_if_changed(
        conn, _BUMP_INTEGRATION, {"bumped_integration": integration_id}, last=last
    )
    version = result.scalar_one_or_none()
    if version is not None:
        await publish(conn, [Change("integration", integration_id, None, int(version))])


async def key_revoked(conn: AsyncConnection, key_id: str) -> None:
    """Publish the revocation of `key_id` in the caller's transaction."""
    await publish(conn, [Change("key", key_id)])


async def send_fence(conn: AsyncConnection, token: str) -> None:
    """NOTIFY a fence: a listener that received it has received every change committed
    before this statement (PostgreSQL delivers in commit order)."""
    await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": f"f {token}"})
