"""Calendar data of the emulated accounts (owned by the Calendar v3 part of the emulator)."""

from __future__ import annotations


class CalendarStore:
    """Placeholder: calendars, events, sync tokens and channels per user."""
