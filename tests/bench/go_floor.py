"""Go's reverse proxy as one more row of the benchmark: the floor of a compiled proxy.

``--go-floor`` (``make bench GO_FLOOR=1``) adds a pass-through built from Go's
standard library alone (``net/http`` and ``httputil.ReverseProxy``: one shared
transport with keep-alive, streams flushed chunk by chunk). It does what the
minimal aiohttp proxy does and nothing more, so beside it the row shows what the
same pass-through costs without an interpreter: the room a data plane compiled
from a typed language would have for the sidecar's features. It is built with the
local Go toolchain (no module downloads) into the test bed's cache, once per
source, and runs pinned to the proxies' core like the others.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from tests.controlplane.gotool import find_go, go_env
from tests.controlplane.versions import testbin_root

READY_PATH = "/readyz"
BINARY = "go-floor"

_GO_MOD = "module aegis.local/bench/gofloor\n\ngo 1.24\n"
_MAIN_GO = """\
// The least a Go pass-through does: forward the body, relay the answer as it comes.
package main

import (
\t"flag"
\t"log"
\t"net/http"
\t"net/http/httputil"
\t"net/url"
\t"strings"
)

func main() {
\tupstream := flag.String("upstream", "", "the upstream's base URL, ending in /v1")
\tport := flag.String("port", "", "the port to listen on, on 127.0.0.1")
\tflag.Parse()
\ttarget, err := url.Parse(strings.TrimSuffix(*upstream, "/v1"))
\tif err != nil {
\t\tlog.Fatal(err)
\t}
\tproxy := httputil.NewSingleHostReverseProxy(target)
\tproxy.FlushInterval = -1 // every chunk of a stream is flushed as it arrives
\tproxy.Transport = &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}
\tmux := http.NewServeMux()
\tmux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
\t\tw.Header().Set("Content-Type", "application/json")
\t\tw.Write([]byte(`{"ready":true}`))
\t})
\tmux.Handle("/v1/", proxy)
\tlog.Fatal(http.ListenAndServe("127.0.0.1:"+*port, mux))
}
"""


def binary() -> Path:
    """The built proxy, built now when this source has not been built before."""
    digest = hashlib.sha256((_GO_MOD + _MAIN_GO).encode()).hexdigest()[:10]
    built = testbin_root() / f"{BINARY}-{digest}" / BINARY
    if os.access(built, os.X_OK):
        return built
    go = find_go()
    if go is None:
        raise SystemExit("--go-floor needs a Go toolchain: install Go or set AEGIS_GO")
    built.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="go-floor-") as src:
        Path(src, "go.mod").write_text(_GO_MOD)
        Path(src, "main.go").write_text(_MAIN_GO)
        partial = built.with_name(f".{BINARY}.{os.getpid()}.partial")  # one per builder
        done = subprocess.run(
            [go, "build", "-o", str(partial), "."],
            cwd=src,
            env=go_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"go build of the Go floor failed:\n{done.stderr}")
        os.replace(partial, built)
    return built


def command(built: Path, upstream: str, port: int) -> list[str]:
    return [str(built), "--upstream", upstream, "--port", str(port)]
