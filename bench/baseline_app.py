"""The floor authgate is measured against: a raw-ASGI app doing only a token check, on the same server.

Per request it does exactly the work authgate's Bearer check cannot avoid: find ``Authorization``,
take the token after ``Bearer ``, SHA-256 it, look the digest up in a dict built from the same ``tokens``
file, ``hmac.compare_digest`` the match, answer 200 with ``X-Auth-Request-User``. No routing, no policy,
no metrics, no logging.

A token that matches nothing is a failure, which a throttle cannot avoid counting: the floor keys the address
ingress-nginx vouches for (``X-Real-IP``) with a keyed BLAKE2b digest, counts it in a plain dict within a
window, bans it at the limit (authgate's defaults: app.policy.ThrottleSettings) and answers 403 unchecked
while the ban lasts, else 401. Nothing else: no bound on the table, no sweep, no lock, no metrics, no log
(case 11, bench/cases/denial.py, measures denials on it).

Served by the server authgate runs on, with the settings authgate gives it (uvicorn: see ``UVICORN``;
granian: app/granian_server.py's ``server_options``, embedded the same way), so the ratio authgate /
baseline measures authgate's own overhead and nothing else.

    python bench/baseline_app.py --server granian --port 8081 --tokens /path/to/secret/tokens
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

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


def make_app(table: dict[bytes, tuple[bytes, bytes]]) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    throttle = FloorThrottle()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        name = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                if value[:7].lower() == b"bearer ":
                    digest = hashlib.sha256(value[7:].strip()).digest()
                    found = table.get(digest)
                    if found is not None and hmac.compare_digest(found[1], digest):
                        name = found[0]
                break
        if name is None:
            address = next((value for key, value in scope["headers"] if key == b"x-real-ip"), None)
            await send(_THROTTLED if throttle.banned_else_count(address) else _DENY)
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
    app = make_app(load_digests(args.tokens))
    if args.server == "granian":
        return serve_granian(app, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, **UVICORN)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
