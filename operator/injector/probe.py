"""``aegis probe URL``: the injected sidecar's exec health check.

The sidecar listens on 127.0.0.1 only (nothing outside the pod may call it), but the
kubelet's ``httpGet`` probes connect to the pod IP, so the probes exec this inside
the container. It runs every few seconds in every injected pod, so it is kept to a
bare socket exchange (``urllib`` alone would double its start-up time).
"""

from __future__ import annotations

import socket
import sys
from urllib.parse import urlsplit


def probe(url: str, timeout: float = 2.0) -> int:
    """0 when ``url`` answers 2xx, else 1 (with one line on stderr for ``kubectl describe``)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        print(f"probe {url}: only http://host[:port]/path URLs are probed", file=sys.stderr)
        return 2
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = f"GET {target} HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n".encode()
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout) as conn:
            conn.sendall(request)
            head = b""
            while b"\r\n" not in head and len(head) < 1024:
                chunk = conn.recv(1024)
                if not chunk:
                    break
                head += chunk
    except OSError as error:
        print(f"probe {url}: {error}", file=sys.stderr)
        return 1
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    fields = status_line.split()
    if len(fields) >= 2 and fields[0].startswith("HTTP/") and fields[1].startswith("2"):
        return 0
    print(f"probe {url}: {status_line or 'no answer'}", file=sys.stderr)
    return 1
