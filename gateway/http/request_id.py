"""Every request gets an id: the caller's `X-Request-ID` when it is safe to log, else a fresh
one. It is bound for the request's log lines and audit entries and echoed in the response
(problem+json answers too), so a user's report can be matched to the gateway's logs. The
middleware that does it is gateway.http.middleware."""

from __future__ import annotations

HEADER = "X-Request-ID"
