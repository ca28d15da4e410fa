"""The local, minimal copy of each calendar's busy time, kept current from Google.

model.py           what is kept of an event, and what is busy (pure)
rows.py            Google's event pages as `calendar_events` rows: the ingest fast path (pure)
recurrence.py      local expansion of recurring series (pure)
freshness.py       how current a copy is: the one `as_of` rule every reader applies (pure)
config.py          the engine's and scheduler's settings
engine.py          one entry point that syncs one calendar once (full, incremental, 410 rebuild)
scheduler.py       when each calendar is synced, shared by every gateway process
channels.py        Google push channels: opening, renewing, stopping, judging notifications
store.py           `SyncStore`: the statements below in one object, for the engine and readers
calendar_store.py  the `calendars` rows: created, failures recorded, purged
copy_store.py      the copy's writes: records, busy blocks, generations
read_store.py      what availability reads: blocks in a window, freshness, the index's loads
lease_store.py     sync requests, claims of due calendars, leases
channel_store.py   the `watch_channels` rows
errors.py          the package's error tree
"""
