"""Where a connect session may send the user's browser back to: `canonical_return_url`.

A return URL is checked against the operator's prefixes (GATEWAY_ALLOWED_RETURN_URLS) in its
canonical form, and that form is what the session stores and the browser is sent to, so the
URL checked and the URL followed are the same string. Comparing the raw text would let
`https://app.example.com/oauth/../admin` (or `%2e%2e`) pass the prefix
`https://app.example.com/oauth/` and land elsewhere once a browser or server resolves it.

Canonical form (RFC 3986 section 6.2.2): scheme and host in lower case, the scheme's default
port dropped, percent-encoded unreserved characters decoded (`%2e` is `.`, `%7E` is `~`),
other escapes in upper case, dot segments removed. Refused outright, as tricks with no honest
use in a return URL: anything but http(s) with `//` and a host; userinfo (`user@`); a
backslash, whitespace, control or non-ASCII character anywhere; a malformed `%` escape; and in
the path an encoded `/` or `\\` (`%2F`, `%5C`), an encoded `%` (`%25`, decoded twice elsewhere),
an encoded control character, or a `;` (`..;/` is `..` to some servers).
"""

from __future__ import annotations

import re
import string
from urllib.parse import urlsplit, urlunsplit

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Escapes refused in a path: `/`, `\`, `%`, and control characters.
_PATH_FORBIDDEN_BYTES = frozenset({0x2F, 0x5C, 0x25, 0x7F, *range(0x20)})


def _normalise_escapes(text: str) -> str:
    def fix(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return _ESCAPE.sub(fix, text)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 for an absolute path: `.` segments go, `..` takes its parent with it
    (never above the root)."""
    kept: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    result = "/" + "/".join(kept)
    if path.endswith(("/.", "/..")) and not result.endswith("/"):
        result += "/"
    return result


def canonical_url(url: str) -> str | None:
    """`url` in canonical form (see the module docstring), or None when it is refused."""
    if not url.isascii() or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return None
    if "\\" in url or _BAD_ESCAPE.search(url):
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not url[len(parts.scheme) :].startswith("://"):
        return None
    if not parts.netloc or "@" in parts.netloc or "%" in parts.netloc:
        return None
    host = parts.hostname
    try:
        port = parts.port
    except ValueError:
        return None
    if not host or host.endswith("."):
        return None
    if ":" in host:
        host = f"[{host}]"  # IPv6: urlsplit dropped the brackets
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"

    path = parts.path or "/"
    if ";" in path:
        return None
    if any(int(h, 16) in _PATH_FORBIDDEN_BYTES for h in _ESCAPE.findall(path)):
        return None
    path = _remove_dot_segments(_normalise_escapes(path))
    query = _normalise_escapes(parts.query)
    return urlunsplit((scheme, netloc, path, query, parts.fragment))


def canonical_return_url(url: str, prefixes: list[str]) -> str | None:
    """The canonical form of `url` when it starts with one of the allowed `prefixes` (each
    compared in canonical form too), else None. A prefix that does not end in '/', '?' or '&'
    must end at a boundary, so `https://a.example.com/cb` admits `/cb/x` and `/cb?x` but not
    `/cbx`."""
    canonical = canonical_url(url)
    if canonical is None:
        return None
    for raw_prefix in prefixes:
        prefix = canonical_url(raw_prefix)
        if prefix is None or not canonical.startswith(prefix):
            continue
        rest = canonical[len(prefix) :]
        if not rest or prefix.endswith(("/", "?", "&")) or rest[0] in "/?#":
            return canonical
    return None


def return_url_allowed(url: str, prefixes: list[str]) -> bool:
    """Whether `url` may receive the user's browser (see `canonical_return_url`)."""
    return canonical_return_url(url, prefixes) is not None
