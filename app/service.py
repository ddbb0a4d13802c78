"""The composition root: the one place that builds what the process owns (the state, the decision core) and
starts and stops everything that runs — the credential source (the mounted directory or a Secret watch), the
shared throttle, and every wire: HTTP (app.http, run by granian or uvicorn, app.server), the browser's
sign-in pages on the same port (app.browser, when a route accepts sessions), Envoy's gRPC
(app.grpc_server, on ``--grpc-port``) and the health wire (app.health_server, on ``--health-port``).

The wires are peers: each imports the decision core and nothing of the others, and none starts anything. One
lifespan (:meth:`Service.lifespan`) starts the rest around the HTTP server, which runs it as its ASGI
lifespan on either server, on the process's one event loop: HTTP and gRPC share one snapshot, policy,
throttle, allow memo and set of metrics without a lock. docs/architecture.md draws the rooms."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar
from litestar.handlers import HTTPRouteHandler

from app.browser import BrowserEndpoints
from app.decider import Decider
from app.health import Heartbeat
from app.health_server import serving_health
from app.http import DecisionEndpoint, create_http_app
from app.reload import DirectoryWatcher
from app.settings import Settings
from app.shared_throttle import SharedThrottle
from app.state import AppState, build_state


class Service:
    """The state and decision core of one process, and the lifespan that runs everything around them."""

    def __init__(self, settings: Settings, state: AppState | None = None) -> None:
        # The policy loads now: a bad one fails the start. Credentials load in the lifespan.
        self.state = state if state is not None else build_state(settings)
        self.decider = Decider(self.state)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Starts the credential source, the shared throttle and the gRPC and health wires; stops them in
        reverse when the block ends (``app``: the ASGI app whose lifespan this is, unused)."""
        state = self.state
        source = credential_source(state)
        task = asyncio.create_task(source.run(), name="credential-source")
        shared = state.throttle if isinstance(state.throttle, SharedThrottle) else None
        if shared is not None:
            await shared.start()  # returns at once: decisions never wait for Redis
        try:
            async with contextlib.AsyncExitStack() as stack:
                if state.settings.health_port is not None:
                    await stack.enter_async_context(serving_health(state))
                if state.settings.grpc_port is not None:
                    # imported only when asked for: grpcio and Envoy's protos cost ~80 ms and some memory
                    from app.grpc_server import serving_grpc

                    await stack.enter_async_context(serving_grpc(state, self.decider))
                yield
        finally:
            if shared is not None:
                await shared.stop()
            source.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def create_app(settings: Settings, state: AppState | None = None) -> Litestar:
    """The HTTP wire's Litestar app with the service's lifespan: what in-process tests drive (the decision
    endpoint mounted at ``/auth``)."""
    service = Service(settings, state)
    return create_http_app(
        service.state, service.decider, service.lifespan, browser_pages(service.state, service.decider)
    )


def create_asgi(settings: Settings) -> DecisionEndpoint:
    """What ``authgate serve`` runs on either server: the decision endpoint in front of the Litestar app,
    which carries the probes and the service's lifespan."""
    service = Service(settings)
    app = create_http_app(
        service.state, service.decider, service.lifespan, browser_pages(service.state, service.decider)
    )
    return DecisionEndpoint(service.state, service.decider, others=app)  # type: ignore[arg-type]


def browser_pages(state: AppState, decider: Decider) -> list[HTTPRouteHandler]:
    """The browser wire's sign-in and sign-out pages (app.browser), only when a route accepts sessions: with
    none, /authgate/ answers 404 as before. Their password checks wait under the decider's one bound."""
    return BrowserEndpoints(state, decider.slow_checks).handlers() if state.policy.session_routes else []


def credential_source(state: AppState) -> Any:
    """The loop that keeps credentials current: the mounted directory (default) or a Secret watch."""
    settings = state.settings
    if settings.watch_secret is not None:
        # imported only in watch mode: it pulls in the Kubernetes client
        from app.kube.watch import SecretWatcher, recommended_max_age

        watch_timeout, backoff_max = 60, 30.0
        heartbeat = Heartbeat("secret-watch", max_age=recommended_max_age(watch_timeout, backoff_max))
        state.heartbeats.append(heartbeat)
        namespace, name = settings.watch_secret
        return SecretWatcher(
            namespace,
            name,
            state.reloader.apply,
            heartbeat,
            watch_timeout_seconds=watch_timeout,
            backoff_max=backoff_max,
        )
    heartbeat = Heartbeat("secret-directory-watch", max_age=30.0)
    state.heartbeats.append(heartbeat)
    return DirectoryWatcher(settings.secret_dir, state.reloader, heartbeat)
