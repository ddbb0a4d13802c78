"""Running the app on granian (a Rust HTTP server; hyper parses HTTP/1), embedded: one process, like the
uvicorn path. granian's Rust runtime reads and writes the sockets on its own thread and hands each request to
the app on this process's uvloop event loop; the service's lifespan (app.service), signals, JSON logs and the bounded
graceful shutdown are authgate's, as on uvicorn.

Why embedded rather than granian's usual supervisor + worker processes: the same throughput here (both put
the Rust runtime on its own thread), while a second Python process, whose RSS counts against the pod's
memory, measured 35 MB more (docs/benchmarks.md). granian logs "Embedded server is experimental!" at start;
its behaviour as authgate uses it is pinned by tests/integration (limits, signals, lifespan) and the granian
version by pyproject.toml.

The request limits map onto granian's own settings. Where the answer differs from uvicorn's (docs/security.md,
"Request limits"):
- read timeout: hyper's ``header_read_timeout``. A head still incomplete then gets the connection closed
  (uvicorn answers 408 first; either way the proxy fails the request closed). The same timer runs while a
  kept-alive connection waits for its next request, so idle keep-alive connections last ``read_timeout``
  (uvicorn: 75 s).
- header lines: hyper refuses a 101st itself (431), hence --max-headers at most 100 here (app/settings.py); a
  lower limit is HeaderCountLimit's (app/head_limits.py), with uvicorn's 431.
- head size: hyper's read buffer, sized at ``max_head_bytes``. A head of at most ``max_head_bytes`` always gets
  through; hyper answers 431 once it holds ``max_head_bytes`` without the head's end. It reads in growing
  steps (8, 16, 32, 64 KiB), so a larger head that arrives in one burst can get through when the read that
  crosses the limit also ends it: always less than twice the limit (at the default, 122,880 bytes passed and
  124,518 were refused). uvicorn's limit is exact. Counting each head exactly in the app cost a tenth of
  authgate's time per request (docs/benchmarks.md); the buffer already bounds a connection's memory.
- connection cap: ``backpressure``, a semaphore taken before each accept. A connection beyond the cap waits in
  the listen backlog until one closes, which the read timeout bounds, instead of getting uvicorn's 503.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from typing import Any

import uvloop
from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.embed import Server

from app.head_limits import HeaderCountLimit
from app.logs import logging_config
from app.settings import GRANIAN_MAX_HEADERS, Settings

log = logging.getLogger("authgate")

# hyper refuses a smaller read buffer (it panics below 8 KiB).
MIN_BUFFER_BYTES = 8192
# Seconds in-flight requests and the lifespan's shutdown get after SIGTERM before the process exits anyway:
# uvicorn's path uses the same bound; the chart's terminationGracePeriodSeconds (30) covers it.
GRACEFUL_SHUTDOWN_SECONDS = 5.0
# Connections the kernel queues for accept: uvicorn's default (granian's embedded default is 128).
BACKLOG = 2048


def server_options(settings: Settings) -> dict[str, Any]:
    """granian's settings for ``settings``, all but the app and its interface (the raw-ASGI floor in bench/
    runs on them too)."""
    limits = settings.limits
    return {
        "address": settings.host,
        "port": settings.port,
        "http": HTTPModes.http1,
        "websockets": False,  # no front door sends an upgrade to an auth service; one is an ordinary request
        "backlog": BACKLOG,
        "backpressure": limits.max_connections,
        "http1_settings": HTTP1Settings(
            header_read_timeout=max(1, round(limits.read_timeout * 1000)),
            keep_alive=True,
            max_buffer_size=max(MIN_BUFFER_BYTES, limits.max_head_bytes),
            pipeline_flush=False,
        ),
        "log_level": LogLevels(settings.log_level),
        "log_dictconfig": logging_config(settings.log_level),
        "log_access": False,
    }


def serve_granian(settings: Settings, app: Any) -> int:
    """Serves the ASGI ``app`` (app.service's, with its lifespan) until SIGTERM or SIGINT. Exit status 0 after
    a stop, 1 when the app could not start (its lifespan failed) or stopped on its own."""
    max_headers = settings.limits.max_headers
    server = Server(
        app if max_headers >= GRANIAN_MAX_HEADERS else HeaderCountLimit(app, max_headers),
        interface=Interfaces.ASGI,  # with the lifespan
        **server_options(settings),
    )
    # As in app/server.py: what lives as long as the process leaves the cyclic collector's reach.
    gc.collect()
    gc.freeze()
    return run(server)


def run(server: Server) -> int:
    """Runs an embedded granian server on a uvloop event loop until SIGTERM or SIGINT, then stops it
    gracefully within GRACEFUL_SHUTDOWN_SECONDS."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_run(server))


async def _run(server: Server) -> int:
    loop = asyncio.get_running_loop()
    serving = asyncio.ensure_future(server.serve())
    stopping = False

    def stop(signum: signal.Signals) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        log.info("stopping", extra={"event": "stop", "signal": signum.name})
        server.stop()  # type: ignore[no-untyped-call]  # granian leaves it unannotated
        loop.call_later(GRACEFUL_SHUTDOWN_SECONDS, _give_up, serving)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    try:
        await serving
    except asyncio.CancelledError:
        log.warning(
            "graceful shutdown took longer than %.0f s; exiting with requests in flight",
            GRACEFUL_SHUTDOWN_SECONDS,
            extra={"event": "stop_timeout"},
        )
        return 0
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    if server.interrupt_children or not stopping:
        log.error("the server stopped on its own (see above)", extra={"event": "stop", "signal": None})
        return 1
    # granian's serve() returns once its worker has drained and the lifespan's shutdown has run.
    log.info("application shutdown complete", extra={"event": "stopped"})
    return 0


def _give_up(serving: asyncio.Future[None]) -> None:
    if not serving.done():
        serving.cancel()
