"""``authgate serve``: the service (app.service) as one ASGI app, whose lifespan starts everything else, run on
granian (app/granian_server.py) or on uvicorn (here: one process, httptools + uvloop, no access log, bounded
graceful shutdown, request limits (app/limits.py) in the protocol)."""

from __future__ import annotations

import dataclasses
import gc
import logging
from typing import Any

import uvicorn

from app.limits import protocol_class
from app.logs import configure_logging
from app.service import create_asgi
from app.settings import Settings

log = logging.getLogger("authgate")


def serve(settings: Settings) -> int:
    configure_logging(settings.log_level)
    log.info(
        "starting",
        extra={
            "event": "start",
            "server": settings.server,
            "host": settings.host,
            "port": settings.port,
            "proxy": ",".join(settings.proxy),
            "secret_dir": str(settings.secret_dir),
            "config": str(settings.config) if settings.config else None,
            "watch_secret": "/".join(settings.watch_secret) if settings.watch_secret else None,
            "limits": dataclasses.asdict(settings.limits),
            "grpc_port": settings.grpc_port,
            "grpc_default_route": settings.grpc_default_route,
            "health_port": settings.health_port,
        },
    )
    app = create_asgi(settings)
    if settings.server == "granian":
        from app.granian_server import serve_granian  # granian only when chosen

        return serve_granian(settings, app)
    return _serve_uvicorn(settings, app)


def _serve_uvicorn(settings: Settings, app: Any) -> int:
    limits = settings.limits
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol_class(limits),
        interface="asgi3",
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # never let a client's X-Forwarded-For rewrite our idea of the peer
        server_header=False,
        date_header=False,
        log_config=None,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=75,
        limit_concurrency=limits.uvicorn_limit_concurrency(),
    )
    server = uvicorn.Server(config)
    # Everything allocated so far (the framework, the policy) lives as long as the process: move it out of
    # the cyclic collector's reach, so collections triggered by per-request garbage stay small.
    gc.collect()
    gc.freeze()
    server.run()
    return 0 if server.started else 1
