"""What the emulator saw: a bounded request log and per-user token-endpoint call counts.

The middleware in `emulator/app.py` records every request outside `/_emulator/` after it has been
answered (including faulted ones), so tests can assert "the gateway refreshed exactly once" or
"it backed off before the second events.list" without instrumenting the gateway.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_LOG_SIZE = 2000


@dataclass(frozen=True)
class RequestRecord:
    """One answered request. `at` is emulator time (seconds since the epoch)."""

    seq: int
    at: float
    method: str
    path: str
    query: dict[str, str]
    endpoint: str
    user: str | None  # sub, when the request could be tied to a user
    status: int
    grant_type: str | None = None
    fault_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Inspector:
    """Request log (newest `max_records` kept) and token-endpoint counters."""

    max_records: int = DEFAULT_LOG_SIZE
    records: deque[RequestRecord] = field(default_factory=deque)
    # (sub or "", grant_type or "") -> calls received by the token endpoint, faulted ones included.
    token_calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    def record(
        self,
        *,
        at: float,
        method: str,
        path: str,
        query: dict[str, str],
        endpoint: str,
        user: str | None,
        status: int,
        grant_type: str | None = None,
        fault_id: int | None = None,
    ) -> RequestRecord:
        rec = RequestRecord(
            next(self._seq), at, method, path, query, endpoint, user, status, grant_type, fault_id
        )
        self.records.append(rec)
        while len(self.records) > self.max_records:
            self.records.popleft()
        if endpoint == "token":
            self.token_calls[(user or "", grant_type or "")] += 1
        return rec

    def requests(
        self,
        *,
        endpoint: str | None = None,
        user: str | None = None,
        method: str | None = None,
        path_prefix: str | None = None,
        status: int | None = None,
        since_seq: int = 0,
    ) -> list[RequestRecord]:
        """Logged requests, oldest first, filtered by every criterion given (`user` is a sub)."""
        return [
            r
            for r in self.records
            if r.seq > since_seq
            and (endpoint is None or r.endpoint == endpoint)
            and (user is None or r.user == user)
            and (method is None or r.method == method.upper())
            and (path_prefix is None or r.path.startswith(path_prefix))
            and (status is None or r.status == status)
        ]

    def token_call_counts(self) -> dict[str, dict[str, int]]:
        """{sub: {grant_type: calls}}; calls that named no known user are under ""."""
        out: dict[str, dict[str, int]] = {}
        for (sub, grant_type), n in sorted(self.token_calls.items()):
            out.setdefault(sub, {})[grant_type] = n
        return out

    def token_calls_for(self, sub: str, grant_type: str) -> int:
        return self.token_calls[(sub, grant_type)]

    def reset(self) -> None:
        """Forget the log and the counters (sequence numbers keep increasing)."""
        self.records.clear()
        self.token_calls.clear()
