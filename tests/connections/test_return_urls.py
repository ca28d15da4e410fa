"""Return URLs are checked in canonical form (finding 7 of issue 14): a prefix of
`https://app.example.com/oauth/` let `/oauth/../admin` and `/oauth/%2e%2e/admin` through."""

from __future__ import annotations

import pytest

from gateway.connections.return_urls import canonical_return_url, canonical_url

PREFIXES = ["https://app.example.com/oauth/", "https://b.example.com/cb", "http://127.0.0.1:9000/"]

BYPASSES = [
    # dot segments, plain and encoded
    "https://app.example.com/oauth/../admin",
    "https://app.example.com/oauth/%2e%2e/admin",
    "https://app.example.com/oauth/%2E%2E/admin",
    "https://app.example.com/oauth/.%2e/admin",
    "https://app.example.com/oauth/%2e./admin",
    "https://app.example.com/oauth/./../admin",
    "https://app.example.com/oauth/x/../../admin",
    "https://app.example.com/oauth/..",
    "https://APP.example.com/oauth/../admin",
    "https://app.example.com:443/oauth/%2e%2e/admin",
    # encoded slashes and backslashes, double encoding, path parameters
    "https://app.example.com/oauth/..%2fadmin",
    "https://app.example.com/oauth/..%2Fadmin",
    "https://app.example.com/oauth/%2e%2e%2fadmin",
    "https://app.example.com/oauth/..\\admin",
    "https://app.example.com/oauth/%5c..%5cadmin",
    "https://app.example.com/oauth/%252e%252e/admin",
    "https://app.example.com/oauth/..;/admin",
    "https://app.example.com/oauth/%00/../../admin",
    "https://app.example.com/oauth/x%0d%0aSet-Cookie:%20a=b",
    # userinfo and host confusion
    "https://user@app.example.com/oauth/x",
    "https://app.example.com@evil.example/oauth/",
    "https://app.example.com\\@evil.example/oauth/",
    "https://app.example.com%40evil.example/oauth/",
    "https://evil.example#@app.example.com/oauth/",
    "https://evil.example?@app.example.com/oauth/",
    "https://app.example.com.evil.example/oauth/",
    "https://app.example.com./oauth/x",
    "https://app.example.com:8443/oauth/x",
    "https://app.example.com:99999/oauth/x",
    # scheme tricks
    "//app.example.com/oauth/x",
    "https:/app.example.com/oauth/x",
    "https:app.example.com/oauth/x",
    "http://app.example.com/oauth/x",
    "javascript://app.example.com/oauth/%0aalert(1)",
    # whitespace, controls, non-ASCII, malformed escapes
    "https://app.example.com/oauth/\t../admin",
    "https://app.example.com/oauth/x\r\nLocation: https://evil.example/",
    " https://app.example.com/oauth/x",
    "https://app.example.com/oauth/\uff0e\uff0e/admin",
    "https://app.example.com/oauth/%zz",
    "https://app.example.com/oauth/%",
    # prefix boundary
    "https://b.example.com/cbx",
    "https://b.example.com/c%62x",
    "https://app.example.com/oauth",
]

LEGITIMATE = [
    ("https://app.example.com/oauth/done", "https://app.example.com/oauth/done"),
    ("https://app.example.com/oauth/", "https://app.example.com/oauth/"),
    ("https://app.example.com/oauth/done?x=1&next=%2Fhome", None),
    ("https://app.example.com/oauth/cb#section", None),
    ("https://app.example.com/oauth/a%20b/caf%C3%A9", None),
    ("https://APP.Example.COM/oauth/x", "https://app.example.com/oauth/x"),
    ("HTTPS://app.example.com:443/oauth/x", "https://app.example.com/oauth/x"),
    ("https://app.example.com/oauth/%7euser", "https://app.example.com/oauth/~user"),
    ("https://app.example.com/oauth/%c3%a9", "https://app.example.com/oauth/%C3%A9"),
    ("https://app.example.com/oauth/./x", "https://app.example.com/oauth/x"),
    ("https://app.example.com/oauth/a/../b", "https://app.example.com/oauth/b"),
    ("https://b.example.com/cb", None),
    ("https://b.example.com/cb/x", None),
    ("https://b.example.com/cb?x=1", None),
    ("http://127.0.0.1:9000/done", None),
]


@pytest.mark.parametrize("url", BYPASSES)
def test_bypass_attempts_are_refused(url: str) -> None:
    assert canonical_return_url(url, PREFIXES) is None


@pytest.mark.parametrize(("url", "canonical"), LEGITIMATE)
def test_legitimate_return_urls_pass_in_canonical_form(url: str, canonical: str | None) -> None:
    assert canonical_return_url(url, PREFIXES) == (canonical or url)


def test_prefixes_are_compared_in_canonical_form_too() -> None:
    assert canonical_return_url("https://app.example.com/x", ["HTTPS://APP.example.com"]) == (
        "https://app.example.com/x"
    )
    assert canonical_return_url(
        "https://app.example.com/oauth/x", ["https://app.example.com/%6fauth/"]
    )
    # A prefix that is itself a trick never matches anything.
    assert canonical_return_url("https://a.example/x", ["https://u@a.example/"]) is None


def test_canonical_form_is_stable() -> None:
    for url, _canonical in LEGITIMATE:
        once = canonical_url(url)
        assert once is not None and canonical_url(once) == once, url
