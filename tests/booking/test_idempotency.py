"""Booking ids are stable, distinct per (tenant, integration, key), and valid for Google."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.booking.idempotency import body_fingerprint, google_event_id

GOOGLE_EVENT_ID = re.compile(r"^[a-v0-9]{5,1024}$")  # Google's rule for client-chosen ids
keys = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200
)


@given(
    tenant=st.text(min_size=1, max_size=64), integration=st.text(min_size=1, max_size=32), key=keys
)
def test_ids_are_valid_google_ids_and_stable(tenant: str, integration: str, key: str) -> None:
    event_id = google_event_id(tenant, integration, key)
    assert GOOGLE_EVENT_ID.match(event_id)
    assert event_id == google_event_id(tenant, integration, key)


def test_ids_differ_by_tenant_integration_and_key() -> None:
    base = google_event_id("acme", "int_1", "order-42")
    assert base != google_event_id("globex", "int_1", "order-42")
    assert base != google_event_id("acme", "int_2", "order-42")
    assert base != google_event_id("acme", "int_1", "order-43")
    # Joining with a separator: ("ab", "c") and ("a", "bc") are different requests.
    assert google_event_id("ab", "c", "k") != google_event_id("a", "bc", "k")


@pytest.mark.parametrize("key", ["", "has space", "x" * 201, "naïve"])
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="Idempotency-Key"):
        google_event_id("acme", "int_1", key)


def test_fingerprint_ignores_key_order_but_not_values() -> None:
    a = {"summary": "Demo", "start": "2026-11-24T15:00:00Z", "attendees": [{"email": "x@y.z"}]}
    b = {"attendees": [{"email": "x@y.z"}], "start": "2026-11-24T15:00:00Z", "summary": "Demo"}
    assert body_fingerprint(a) == body_fingerprint(b)
    assert body_fingerprint(a) != body_fingerprint({**a, "summary": "Demo 2"})
