"""A raw HTTP/1.1 client for requests that ordinary clients refuse to send: CR, LF or NUL in a
header value, a body larger than announced, a chunked body of any size.

    answer = send_raw("127.0.0.1", 8080, "GET", "/healthz", headers=[b"X-Request-ID: a\\rb"])
    answer.status, answer.headers, answer.body
"""

from __future__ import annotations

import contextlib
import http.client
import socket
from dataclasses import dataclass

CHUNK_BYTES = 8192


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes  # the status line and headers as sent on the wire

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        return found[0] if found else None

    def header_names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


def send_raw(
    host: str,
    port: int,
    method: str,
    target: str,
    *,
    headers: list[bytes] | None = None,
    body: bytes = b"",
    chunked: bool = False,
    timeout_s: float = 30,
) -> RawAnswer:
    """Send one request exactly as given (with `Host` and `Connection: close` added) and read
    the answer. `headers` are raw lines without their CRLF."""
    lines = [f"{method} {target} HTTP/1.1".encode(), f"Host: {host}:{port}".encode()]
    lines += [b"Connection: close", *(headers or [])]
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
        pieces = [body[i : i + CHUNK_BYTES] for i in range(0, len(body), CHUNK_BYTES)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    else:
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}".encode())
        payload = body
    request = b"\r\n".join(lines) + b"\r\n\r\n" + payload
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        # The server may answer before reading everything: its answer is still there.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        answer_headers = list(response.getheaders())
        answer_body = response.read()
    head = f"HTTP/1.1 {response.status}\r\n".encode() + b"".join(
        f"{k}: {v}\r\n".encode("latin-1") for k, v in answer_headers
    )
    return RawAnswer(response.status, answer_headers, answer_body, head)
