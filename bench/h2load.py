"""Running h2load (Debian nghttp2-client) for a timed run, over HTTP/2 or HTTP/1.1, and reading its result
into the same shape as wrk's. gRPC is HTTP/2 with a framed body: h2load sends a pre-encoded one (``-d``).

h2load counts an HTTP status, not a gRPC one (that travels in the trailers): a gRPC variant is checked with
a real grpcio client before it is measured (bench/cases/grpc.py), so every 200 counted is the answer checked."""

from __future__ import annotations

import re
import shutil
import statistics
import struct
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from bench.wrk import WrkResult

_FINISHED = re.compile(r"^finished in ([\d.]+)(m?s), ([\d.]+) req/s", re.MULTILINE)
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, "
    r"(\d+) timeout",
    re.MULTILINE,
)
_STATUS = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.MULTILINE)


def grpc_frame(message: bytes) -> bytes:
    """One gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, the bytes."""
    return struct.pack(">BI", 0, len(message)) + message


class H2load:
    """``h2load -t THREADS -c CLIENTS -m STREAMS -D SECONDS`` against one URL with fixed headers (and body)."""

    def __init__(self, binary: str | None = None, *, threads: int = 1) -> None:
        found = binary or shutil.which("h2load")
        if found is None:
            raise FileNotFoundError("h2load is not installed: run scripts/tools/40-bench.sh (Debian nghttp2-client)")
        self.binary = found
        self.threads = threads
        self._dir = tempfile.TemporaryDirectory(prefix="authgate-h2load-")

    def run(
        self,
        url: str,
        headers: Mapping[str, str],
        seconds: float,
        *,
        clients: int,
        streams: int = 1,
        body: Path | None = None,
        http1: bool = False,
    ) -> WrkResult:
        log = Path(self._dir.name) / "requests.log"
        argv = [
            self.binary,
            "-t",
            str(self.threads),
            "-c",
            str(clients),
            "-m",
            str(streams),
            "-D",
            str(max(1, round(seconds))),
            "-T",
            "5",  # a connection that sends nothing for 5 s is an error, like wrk's --timeout 5s
            f"--log-file={log}",
        ]
        if http1:
            argv.append("--h1")
        if body is not None:
            argv += ["-d", str(body)]
        for name, value in headers.items():
            argv += ["-H", f"{name}: {value}"]
        argv.append(url)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
        finished, requests, status = (
            _FINISHED.search(out.stdout),
            _REQUESTS.search(out.stdout),
            _STATUS.search(out.stdout),
        )
        if out.returncode != 0 or finished is None or requests is None or status is None:
            raise RuntimeError(f"h2load failed ({out.returncode}) for {url}:\n{out.stdout}\n{out.stderr}")
        duration = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
        done = int(requests.group(3))
        failed, errored, timeout = (int(requests.group(i)) for i in (5, 6, 7))
        not_2xx = sum(int(status.group(i)) for i in (2, 3, 4))
        # The log: start (µs since the epoch), HTTP status, µs until the end of the response; one line a request.
        elapsed = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.count("\t") == 2)
        log.unlink(missing_ok=True)

        def percentile(q: float) -> float:
            return elapsed[min(len(elapsed) - 1, int(q * len(elapsed)))] / 1000 if elapsed else 0.0

        return WrkResult(
            rps=done / duration if duration else 0.0,
            requests=done,
            errors=failed + errored + timeout + not_2xx,
            p50_ms=percentile(0.50),
            p90_ms=percentile(0.90),
            p99_ms=percentile(0.99),
            mean_ms=statistics.fmean(elapsed) / 1000 if elapsed else 0.0,
            max_ms=elapsed[-1] / 1000 if elapsed else 0.0,
        )

    def close(self) -> None:
        self._dir.cleanup()
