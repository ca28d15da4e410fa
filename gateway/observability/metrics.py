"""Prometheus metrics: counters where things happen, gauges read from the database on scrape.

Counters and histograms are module-level on prometheus-client's default registry (the
library's idiom: code that observes something imports the metric and increments it; they
only count, never block). Gauges that describe stored state (integrations by status, live
push channels, DEKs per KEK version, sync lag) are computed from the database when `/metrics`
is scraped, so every gateway process reports the same truth and nothing drifts.

Label values are bounded sets (route templates, status codes, outcome and reason codes):
never an id, an email or anything a caller chose.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "gateway_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "gateway_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SYNC_RUNS = Counter(
    "gateway_sync_runs_total",
    "Calendar sync runs, by kind (full; incremental; resync: a full sync forced by Google's"
    " 410) and outcome (ok; backoff: a transient Google failure, retried with backoff; error;"
    " inactive: the integration may not be used, Google not called; crashed: the database"
    " or a bug).",
    ["kind", "outcome"],
)
GOOGLE_ERRORS = Counter(
    "gateway_google_errors_total",
    "Errors answered by Google's Calendar API, by reason (rateLimitExceeded, fullSyncRequired,"
    " ...) or our code when Google gave none.",
    ["reason"],
)
GOOGLE_REQUESTS = Counter(
    "gateway_google_requests_total",
    "Requests sent to Google's Calendar API, by method id (calendar.events.list, ...).",
    ["method"],
)
TOKEN_REFRESHES = Counter(
    "gateway_token_refreshes_total",
    "Access-token refreshes at Google, by outcome (ok, invalid_grant, ...).",
    ["outcome"],
)
CONNECT_CALLBACKS_REFUSED = Counter(
    "gateway_connect_callbacks_refused_total",
    "OAuth callbacks refused before they named a live connect session, so nobody is identified"
    " and no audit entry is written, by reason (missing_state; unknown_state; spent_state: a"
    " replay of a state already used).",
    ["reason"],
)
LIVE_CALLS_REFUSED = Counter(
    "gateway_live_calls_refused_total",
    "Live Google calls refused (429 live_calls_limited) by the limit that refused them"
    " (api_key, tenant).",
    ["limit"],
)
LIVE_ANSWERS_SHARED = Counter(
    "gateway_live_answers_shared_total",
    "Live free/busy questions answered without a Google call of their own, by how (in_flight:"
    " joined the same question at Google; recent: its answer of a few seconds ago).",
    ["how"],
)
