"""The floor authgate is measured against: a raw-ASGI app doing only a token check, on the same server.

Per request it does exactly the work authgate's Bearer check cannot avoid: find ``Authorization``,
take the token after ``Bearer ``, SHA-256 it, look the digest up in a dict built from the same ``tokens``
file, ``hmac.compare_digest`` the match, answer 200 with ``X-Auth-Request-User``. No routing, no policy,
no metrics, no logging (on any path but ``/auth/complete``, below).

A token that matches nothing is a failure, which a throttle cannot avoid counting: the floor keys the address
ingress-nginx vouches for (``X-Real-IP``) with a keyed BLAKE2b digest, counts it in a plain dict within a
window, bans it at the limit (authgate's defaults: app.policy.ThrottleSettings) and answers 403 unchecked
while the ban lasts, else 401. Nothing else: no bound on the table, no sweep, no lock, no metrics, no log
(case 11, bench/cases/denial.py, measures denials on it).

A second auth path, ``/auth/complete``, is the *complete floor*: its allow is the floor's own (the same code),
and a token that matches nothing there gets :class:`CompleteDenial`, one function doing every piece of work
authgate must do for a guess (a Bearer token that is no credential), in authgate's order, and nothing of
authgate's structure (no snapshot, no doors or throttle objects, no helper calls, everything bound once):
the token's spelling (``Bearer <token68>``, the floor's digest missing from the table), the ingress-nginx lone
door's reading as app.doors.reading.FrontDoors.read does it (no other door's marks, ``X-Original-Method`` and a
path from ``X-Original-URL``, method, path and client decoded for the log; anything else counts a front-door
problem), the bounded throttle of app.throttle.Throttle for addresses (bans in expiry order, at most two
expired ones swept per failure, counters in LRU order, both bounded, one lock hold), the metrics of
app.metrics.DecisionStats (a counter cell per route, result, reason and scheme; the latency histogram), the
denial log's aggregation of app.decision_log.DenialLog (the first denial of a kind per 60 s logged in full as a
JSON line, the rest counted, the window closed by a timer) and authgate's prebuilt 401 or 403. What case 11
measures with it: what the required work of a denial costs on top of an allow, written as leanly as Python
allows. Where that surcharge is more than 0.7 leaves on top of authgate's own allow, 0.7 is a ceiling there for
a denial that does what the product promises, however authgate is written (docs/benchmarks.md §11).

Served by the server authgate runs on, with the settings authgate gives it (uvicorn: see ``UVICORN``;
granian: app/granian_server.py's ``server_options``, embedded the same way), so the ratio authgate /
baseline measures authgate's own overhead and nothing else.

    python bench/baseline_app.py --server granian --port 8081 --tokens /path/to/secret/tokens
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import hmac
import logging
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.decision import MAX_AUTHORIZATION_BYTES, TOKEN68_BYTES_RE  # noqa: E402
from app.decision_log import DENIAL_WINDOW_SECONDS, log_not_logged  # noqa: E402
from app.doors import HEADER_DOORS  # noqa: E402
from app.doors.ingress_nginx import INGRESS_NGINX  # noqa: E402
from app.logs import JsonFormatter  # noqa: E402
from app.metrics import LATENCY_BUCKETS  # noqa: E402
from app.policy import ThrottleSettings  # noqa: E402

_THROTTLE = ThrottleSettings()

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Mirrors app/server.py's uvicorn.Config field for field, except lifespan (the baseline has nothing to load) and
# the request limits (app/limits.py): the baseline runs uvicorn's own httptools protocol, so their cost counts
# against authgate in the ratio.
UVICORN: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
    "interface": "asgi3",
    "lifespan": "off",
    "access_log": False,
    "proxy_headers": False,
    "server_header": False,
    "date_header": False,
    "log_level": "warning",
    "timeout_graceful_shutdown": 5,
    "timeout_keep_alive": 75,
}

_DENY = {
    "type": "http.response.start",
    "status": 401,
    "headers": [(b"www-authenticate", b'Bearer realm="baseline"'), (b"content-length", b"0")],
}
_THROTTLED = {"type": "http.response.start", "status": 403, "headers": [(b"content-length", b"0")]}

# The complete floor's auth path and its route name (authgate's ``/auth/<route>``).
COMPLETE_PATHS = {b"/auth/complete": "complete"}
# What authgate answers a guess on a route with ``schemes: [bearer, basic]`` and ``realm: bench`` (bench/servers.py;
# app.decision.response_headers, UNKNOWN_TOKEN and BEARER_THROTTLED), content-length added as app.http does.
COMPLETE_UNKNOWN = {
    "type": "http.response.start",
    "status": 401,
    "headers": [
        (b"cache-control", b"no-store"),
        (b"www-authenticate", b'Bearer realm="bench", error="invalid_token"'),
        (b"www-authenticate", b'Basic realm="bench", charset="UTF-8"'),
        (b"content-length", b"0"),
    ],
}
COMPLETE_THROTTLED = {
    "type": "http.response.start",
    "status": 403,
    "headers": [(b"cache-control", b"no-store"), (b"content-length", b"0")],
}
# The other header doors' marks, for ``--proxy ingress-nginx`` (as app.doors.reading.FrontDoors finds them).
OTHER_MARKS: frozenset[bytes] = frozenset(
    name
    for door in HEADER_DOORS
    if door is not INGRESS_NGINX
    for name in door.marks  # type: ignore[attr-defined]
)
COMPLETE_LOG = logging.getLogger("baseline.decision")
_SWEEP_PER_FAILURE = 2  # app.throttle's


class CompleteDenial:
    """The complete floor's denial of a guess: :attr:`deny`, one function (a closure over everything it uses,
    bound once here) doing all the work authgate does per guess, written out in line; and the state it keeps.

    ``deny(route, scope, authorization)`` is called for a request whose Bearer token's SHA-256 the floor found
    in no table entry (its lookup is the check, not repeated) and returns the answer's start message, or None
    when the request is no guess as authgate tells them (another spelling, a repeated header): the floor's own
    denial answers it then, as authgate decides such a request in full."""

    def __init__(self, settings: ThrottleSettings = _THROTTLE, clock: Callable[[], float] = time.monotonic) -> None:
        # The throttle (app.throttle.Throttle, addresses only): key -> [window start, failures, banned until].
        self.counters: OrderedDict[bytes, list[float]] = OrderedDict()  # not banned; least recently failed first
        self.bans: OrderedDict[bytes, list[float]] = OrderedDict()  # banned (or expired, not swept); expiry order
        self.lock = threading.Lock()
        # Front-door problems, by (route, problem): authgate_original_request_problems.
        self.problems: dict[tuple[str, str], int] = {}
        # authgate_decisions_total's cells and authgate_decision_duration_seconds (app.metrics.DecisionStats).
        self.cells: dict[tuple[str, str, str, str], list[int]] = {}
        self.bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = [0.0]
        # The denial log's kinds seen in the open window, each with the denials it did not log (empty: none open).
        self.not_logged: dict[tuple[str, int, str, str], int] = {}
        self.opened = 0.0
        self.clock = clock

        counters, bans, lock, problems = self.counters, self.bans, self.lock, self.problems
        counters_get, bans_get, move_to_end = counters.get, bans.get, counters.move_to_end
        counters_popitem, bans_popitem = counters.popitem, bans.popitem
        cells, cells_get, bucket_counts, latency_sum = self.cells, self.cells.get, self.bucket_counts, self.latency_sum
        not_logged, not_logged_get = self.not_logged, self.not_logged.get
        hasher = hashlib.blake2b(b"address\0", key=secrets.token_bytes(32), digest_size=16)
        hasher_copy = hasher.copy
        token68, max_bytes, sweep = TOKEN68_BYTES_RE.fullmatch, MAX_AUTHORIZATION_BYTES, _SWEEP_PER_FAILURE
        other_marks = OTHER_MARKS
        limit, window, ban_seconds = settings.max_failures_per_address, settings.window_seconds, settings.ban_seconds
        max_tracked, max_bans = settings.max_tracked, max(1, settings.max_tracked // 2)
        first_bucket, bisect_left, buckets = LATENCY_BUCKETS[0], bisect.bisect_left, LATENCY_BUCKETS
        perf_counter, info, close = time.perf_counter, COMPLETE_LOG.info, self.close_window
        unknown, throttled = COMPLETE_UNKNOWN, COMPLETE_THROTTLED

        def deny(route: str, scope: Scope, authorization: bytes) -> Message | None:
            started = perf_counter()
            # The guess: spelt ``Bearer <token68>`` (so the floor's digest is the token's), one of each header,
            # and no credential's (the floor looked its digest up). app.decision.is_unknown_bearer.
            raw_headers = scope["headers"]
            headers: dict[bytes, bytes] = dict(raw_headers)
            if (
                len(headers) != len(raw_headers)
                or not authorization.startswith(b"Bearer ")
                or len(authorization) > max_bytes
                or token68(authorization[7:]) is None
            ):
                return None
            # The lone door's reading (app.doors.reading.FrontDoors.read, ingress-nginx's view written out).
            method = path = None
            if headers.keys().isdisjoint(other_marks):
                method = headers.get(b"x-original-method")
                url = headers.get(b"x-original-url")
                if method is not None and url is not None:
                    scheme_end = url.find(b"://")
                    if scheme_end >= 0:
                        slash = url.find(b"/", scheme_end + 3)
                        path = url[slash:].split(b"?", 1)[0] if slash >= 0 else b"/"
                    elif url.startswith(b"/"):
                        path = url.split(b"?", 1)[0]
            if method is not None and path is not None:
                method_text: str | None = method.decode("latin-1")
                path_text: str | None = path.decode("latin-1")
                address = headers.get(b"x-real-ip")
                if address:
                    client: str | None = address.decode("latin-1")
                else:  # the door vouches for its peer's address
                    client = str(scope["client"][0]) if scope.get("client") else None
                    address = client.encode() if client else None
            else:
                # A front-door problem, counted (its once-a-minute log line is left out; the long way, every
                # door's account read and cross-checked, too: any request off the lone door's path counts).
                problem = (route, "missing" if headers.keys().isdisjoint(other_marks) else "conflict")
                problems[problem] = problems.get(problem, 0) + 1
                method_text = path_text = None
                client = str(scope["client"][0]) if scope.get("client") else None
                address = client.encode() if client else None
            # The throttle (app.throttle.Throttle.banned_else_count, _record, _count, _add_counter, _add_ban).
            banned = False
            if address:
                digester = hasher_copy()
                digester.update(address)
                key = digester.digest()
                now = clock()
                with lock:
                    ban = bans_get(key) if bans else None
                    if ban is not None and ban[2] > now:
                        banned = True  # refused unchecked, nothing counted
                    else:
                        for _ in range(sweep if bans else 0):
                            if not bans:
                                break
                            first_key, first = next(iter(bans.items()))
                            if first[2] > now:
                                break
                            del bans[first_key]
                        counter = counters_get(key)
                        if counter is not None and now - counter[0] < window and counter[1] + 1 < limit:
                            counter[1] += 1  # the common case: counting, inside its window, short of its limit
                            move_to_end(key)
                        else:
                            if counter is None:
                                counter = bans.pop(key, None)  # expired (a live ban answered above)
                                if counter is None or now - counter[0] >= window:
                                    counter = [now, 0, 0.0]
                                counters[key] = counter
                                while len(counters) + len(bans) > max_tracked:
                                    if bans and next(iter(bans.values()))[2] <= now:
                                        bans_popitem(last=False)
                                    elif len(counters) > 1:
                                        counters_popitem(last=False)  # least recently failed; not this one
                                    elif bans:
                                        bans_popitem(last=False)
                                    else:
                                        break
                            else:
                                move_to_end(key)
                            if now - counter[0] >= window:
                                counter[0], counter[1] = now, 0
                            counter[1] += 1
                            if counter[1] >= limit:  # the limit bans: from the counters to the end of the bans
                                counter[0], counter[1], counter[2] = now, 0, now + ban_seconds
                                del counters[key]
                                if len(bans) >= max_bans:
                                    bans_popitem(last=False)  # closest to expiry
                                bans[key] = counter
            if banned:
                status, reason, answer = 403, "throttled", throttled
            else:
                status, reason, answer = 401, "unknown_token", unknown
            # The metrics: the decision's counter cell and its latency.
            cell = cells_get((route, "deny", reason, "bearer"))
            if cell is None:
                cell = cells[(route, "deny", reason, "bearer")] = [0]
            cell[0] += 1
            seconds = perf_counter() - started
            bucket_counts[0 if seconds <= first_bucket else bisect_left(buckets, seconds)] += 1
            latency_sum[0] += seconds
            # The denial log: the first of its kind in the window in full, the others counted.
            kind = (route, status, reason, "bearer")
            count = not_logged_get(kind)
            if count is not None:
                not_logged[kind] = count + 1
                return answer
            if not not_logged:
                self.opened = clock()
                asyncio.get_running_loop().call_later(DENIAL_WINDOW_SECONDS, close)
            not_logged[kind] = 0
            info(
                "denied",
                extra={
                    "event": "decision",
                    "route": route,
                    "status": status,
                    "reason": reason,
                    "scheme": "bearer",
                    "principal": None,
                    "method": method_text,
                    "path": path_text,
                    "client": client,
                },
            )
            return answer

        self.deny = deny

    def close_window(self) -> None:
        """The denial log's window closes: one line per kind with denials not logged, and the next denial of
        any kind is logged in full (app.decision_log.DenialLog.close_window)."""
        log_not_logged(self.not_logged, round(self.clock() - self.opened, 1), COMPLETE_LOG)
        self.not_logged.clear()


class FloorThrottle:
    """The least a throttle does per failure: one keyed digest of the address and a counter in a dict."""

    def __init__(self, settings: ThrottleSettings = _THROTTLE) -> None:
        self.limit = settings.max_failures_per_address
        self.window = settings.window_seconds
        self.ban = settings.ban_seconds
        self.hasher = hashlib.blake2b(b"address\0", key=secrets.token_bytes(32), digest_size=16)
        self.table: dict[bytes, list[float]] = {}  # key -> [window start, failures, banned until]

    def banned_else_count(self, address: bytes | None) -> bool:
        if not address:
            return False
        hasher = self.hasher.copy()
        hasher.update(address)
        key = hasher.digest()
        now = time.monotonic()
        entry = self.table.get(key)
        if entry is None:
            self.table[key] = [now, 1.0, 0.0]
            return False
        if entry[2] > now:
            return True
        if now - entry[0] >= self.window:
            entry[0], entry[1] = now, 0.0
        entry[1] += 1
        if entry[1] >= self.limit:
            entry[0], entry[1], entry[2] = now, 0.0, now + self.ban
        return False


def load_digests(tokens_file: Path) -> dict[bytes, tuple[bytes, bytes]]:
    """``NAME sha256:<hex> ...`` lines → {digest: (name, digest)}; the same file authgate reads."""
    table: dict[bytes, tuple[bytes, bytes]] = {}
    for line in tokens_file.read_text().splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        name, secret = fields[0], fields[1]
        digest = (
            bytes.fromhex(secret.removeprefix("sha256:"))
            if secret.startswith("sha256:")
            else hashlib.sha256(secret.encode()).digest()
        )
        table[digest] = (name.encode(), digest)
    return table


def make_app(
    table: dict[bytes, tuple[bytes, bytes]], complete: CompleteDenial | None = None
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    throttle = FloorThrottle()
    deny_completely = (complete if complete is not None else CompleteDenial()).deny
    complete_paths = COMPLETE_PATHS

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        name = digest = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                if value[:7].lower() == b"bearer ":
                    digest = hashlib.sha256(value[7:].strip()).digest()
                    found = table.get(digest)
                    if found is not None and hmac.compare_digest(found[1], digest):
                        name = found[0]
                break
        if name is None:
            # /auth/complete: a Bearer token the table does not hold (value is its Authorization) is a guess.
            route = complete_paths.get(scope.get("raw_path"))  # type: ignore[arg-type]
            start = None if route is None or digest is None else deny_completely(route, scope, value)
            if start is None:
                address = next((value for key, value in scope["headers"] if key == b"x-real-ip"), None)
                start = _THROTTLED if throttle.banned_else_count(address) else _DENY
            await send(start)
        else:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"x-auth-request-user", name), (b"content-length", b"0")],
                }
            )
        await send({"type": "http.response.body", "body": b""})

    return app


def serve_granian(app: Callable[[Scope, Receive, Send], Awaitable[None]], host: str, port: int) -> int:
    """On granian exactly as app/granian_server.py runs authgate, except the lifespan (nothing to load) and the
    head limits (app/head_limits.py): their cost counts against authgate in the ratio."""
    from granian.constants import Interfaces
    from granian.server.embed import Server

    from app.granian_server import run, server_options
    from app.settings import Settings

    options = server_options(Settings(host=host, port=port, log_level="warning"))
    return run(Server(app, interface=Interfaces.ASGINL, **options))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["granian", "uvicorn"], default="uvicorn")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=Path, required=True, help="the Secret's tokens file")
    args = parser.parse_args()
    # The complete floor's denial log, as authgate logs at info (app.logs): JSON lines on stderr.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    COMPLETE_LOG.handlers[:] = [handler]
    COMPLETE_LOG.setLevel(logging.INFO)
    COMPLETE_LOG.propagate = False
    app = make_app(load_digests(args.tokens))
    if args.server == "granian":
        return serve_granian(app, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, **UVICORN)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
