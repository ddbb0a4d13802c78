"""The HTTP wire: turns an auth subrequest into a question for the decision core (app.decider) and a
``Decision`` into the proxy's answer. The decision endpoint is raw ASGI (no request parsing, no body, headers
read from one dict) because it sits on the hot path of every request; one Litestar app around it carries the
probes (app.probes) and the lifespan it is given. It knows nothing of the other wires or of what runs them
(app.service)."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from litestar import Litestar, MediaType, Response, get
from litestar.handlers import HTTPRouteHandler, asgi
from litestar.types import HTTPResponseStartEvent, Receive, Scope, Send

from app import probes
from app.answers import Verdict
from app.decider import Decider
from app.decision import Decision, response_headers
from app.doors import front_doors
from app.policy import Policy
from app.probes import ProbeAnswer
from app.sessions import set_cookie, sign_in_location
from app.state import AppState

_AUTH_PREFIX = b"/auth/"
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]
Lifespan = Callable[[Litestar], contextlib.AbstractAsyncContextManager[None]]
WIRE = "http"  # this wire's key among the rendered answers (app.decider)
_NOT_READY: Any = {
    "type": "http.response.start",
    "status": 503,
    "headers": [(b"cache-control", b"no-store"), (b"retry-after", b"1"), (b"content-length", b"0")],
}
_WS_CLOSE: Any = {"type": "websocket.close", "code": 1008}
_EMPTY_BODY: Any = {"type": "http.response.body", "body": b"", "more_body": False}


class DecisionEndpoint:
    """The raw ASGI app behind ``/auth/{route}`` (and ``/auth/{route}/{original path}`` for path-prefix
    doors; ``/auth/~``, which names no route, for the route claiming the original path, app.policy.BY_PATH):
    the HTTP wire of the decision core (app.decider).

    With ``others`` (what ``authgate serve`` runs, see :func:`app.service.create_asgi`) it is the whole app: anything
    but an HTTP request under ``/auth/`` (health, metrics, the lifespan) goes to ``others``, the Litestar
    app. Without (the Litestar mount of the same endpoint, for in-process tests) it answers everything.
    Skipping Litestar's router on the hot path is worth about a third of the decision's cost, and doing the
    dispatch here rather than in a wrapper saves a call on every decision."""

    def __init__(self, state: AppState, decider: Decider, others: ASGIApp | None = None) -> None:
        self.decider = decider
        self.doors = front_doors(state.settings.proxy)
        self.render = self._render  # bound once, not per request
        self.fast_repeat = decider.fast_repeat
        self.refuse_guess = decider.refuse_guess
        self.others = others
        # The exact raw paths of the fast lane (Decider.fast_repeat): what `route_bytes.decode("latin-1")`
        # below reads as each plain route's name, with nothing after it.
        self.plain_paths: dict[bytes, str] = {}
        for name in decider.plain_routes:
            with contextlib.suppress(UnicodeEncodeError):  # such a name cannot arrive through the latin-1 decode
                self.plain_paths[_AUTH_PREFIX + name.encode("latin-1")] = name

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        # The fast lane, looked up first: the exact /auth/<route> of a route without exceptions, one
        # Authorization value, the credential of a remembered allow (Decider.fast_repeat).
        plain_route = self.plain_paths.get(scope.get("raw_path"))  # type: ignore[arg-type]
        if plain_route is not None and scope["type"] == "http":
            raw_headers = scope["headers"]
            # The headers as a dict, built in C; only the names the doors set are read from it. A repeated
            # name (rare) means another pass, so that two Authorization headers are seen as two, never one.
            headers: dict[bytes, bytes] = dict(raw_headers)
            if len(headers) == len(raw_headers):
                value = headers.get(b"authorization")
                if value is not None:
                    repeat = self.fast_repeat(plain_route, value, WIRE, self.render)
                    if repeat is None:
                        # Not a remembered allow: a guess (a Bearer token that is no credential) is refused here.
                        repeat = self.refuse_guess(self.doors, plain_route, headers, value, scope, WIRE, self.render)
                    if repeat is not None:
                        await send(repeat)
                        await send(_EMPTY_BODY)
                        return
                # The memo has been asked (or there is no credential to ask it about): decide in full.
                await self._decide(scope, send, raw_headers, headers, recalled=True)
                return
            await self._decide(scope, send, raw_headers, headers)
        elif scope["type"] != "http" or (self.others is not None and not scope["path"].startswith("/auth/")):
            if self.others is not None:
                await self.others(scope, receive, send)
            else:
                await send(_WS_CLOSE)
        else:
            raw_headers = scope["headers"]
            await self._decide(scope, send, raw_headers, dict(raw_headers))

    async def _decide(
        self,
        scope: dict[str, Any],
        send: Send,
        raw_headers: list[tuple[bytes, bytes]],
        headers: dict[bytes, bytes],
        recalled: bool = False,
    ) -> None:
        """The general path: any auth request the fast lane did not answer (``recalled``: the fast lane has
        already asked the allow memo, so the request is decided in full)."""
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        unique = len(headers) == len(raw_headers)
        decider = self.decider
        if not raw_path.startswith(_AUTH_PREFIX):
            raw_path = _AUTH_PREFIX + raw_path.lstrip(b"/")
        route_bytes, slash, rest = raw_path[len(_AUTH_PREFIX) :].partition(b"/")
        authorization: tuple[bytes, ...]
        if unique:
            value = headers.get(b"authorization")
            authorization = () if value is None else (value,)
        else:
            authorization = tuple(value for name, value in raw_headers if name == b"authorization")

        route_name = route_bytes.decode("latin-1")
        rest_or_none = rest if slash else None
        start = (
            None
            if recalled
            else decider.recall(self.doors, route_name, headers, authorization, rest_or_none, scope, WIRE, self.render)
        )
        if start is None:
            verdict = await decider.decide(self.doors, route_name, headers, authorization, rest_or_none, scope)
            if verdict is None:
                start = _NOT_READY
            elif verdict.decision.sign_in:
                start = self._sign_in(verdict, headers, rest_or_none, scope)
            elif verdict.decision.set_cookie is not None:
                start = self._refreshing(verdict)
            else:
                start = decider.answer(verdict, WIRE, self.render)
        await send(start)
        await send(_EMPTY_BODY)

    def _sign_in(self, verdict: Verdict, headers: dict[bytes, bytes], rest: bytes | None, scope: dict[str, Any]) -> Any:
        """A browser's page load without a session: a redirect to the sign-in page through a door that passes
        one to the browser (Traefik, Envoy), else the 401 (ingress-nginx redirects it with auth-signin)."""
        door = self.doors.redirecting_door(headers, rest, scope)
        if door is None:
            return self.decider.answer(verdict, WIRE, self.render)
        policy = verdict.snapshot.policy
        location = sign_in_location(policy.session, door.raw_target(headers, rest, scope), door.origin(headers, scope))
        headers_out = [(b"location", location.encode("latin-1")), (b"cache-control", b"no-store")]
        return {"type": "http.response.start", "status": 302, "headers": [*headers_out, (b"content-length", b"0")]}

    def _refreshing(self, verdict: Verdict) -> Any:
        """A session allow with a refreshed cookie (sliding idle expiry): rendered for this request alone, with
        its Set-Cookie, which ingress-nginx (``auth-always-set-cookie``), Traefik (``addAuthCookiesToResponse``)
        and Envoy (``allowed_client_headers_on_success``) hand to the browser."""
        route_name, decision, snapshot = verdict
        now = self.decider.state.clock()
        start = self._render(decision, snapshot.policy, route_name, now)
        session = snapshot.policy.session
        assert decision.set_cookie is not None
        max_age = session.lifetime_seconds  # the browser's copy; the sealed expiries are what count
        cookie = set_cookie(session, decision.set_cookie, max_age).encode("latin-1")
        return {**start, "headers": [(b"set-cookie", cookie), *start["headers"]]}

    def _render(self, decision: Decision, policy: Policy, route_name: str, now: dt.datetime) -> HTTPResponseStartEvent:
        """The answer's start message: the core's headers, plus what the trusted doors need on an allow. The
        core keeps it for repeats (app.decider), and the servers only read it."""
        headers = [*response_headers(decision, policy, route_name, now), (b"content-length", b"0")]
        if decision.allowed:
            for door in self.doors.trusted:
                headers[-1:-1] = door.allow_headers(decision.principal is not None)
        return {"type": "http.response.start", "status": decision.status, "headers": headers}


def create_http_app(
    state: AppState,
    decider: Decider,
    lifespan: Lifespan | None = None,
    pages: Sequence[HTTPRouteHandler] = (),
) -> Litestar:
    """The HTTP wire's Litestar app: the decision endpoint mounted at ``/auth`` (for in-process use; ``authgate
    serve`` puts the same endpoint in front, see :meth:`DecisionEndpoint.__init__`), and ``/healthz``,
    ``/readyz`` and ``/metrics`` (app.probes) on the decision port, where deployments that predate
    ``--health-port`` probe them. ``lifespan`` is the composition root's (app.service): this wire starts
    nothing itself. ``pages``: other wires' handlers served on the same port (the browser's sign-in forms,
    app.browser), mounted by the root."""
    endpoint = DecisionEndpoint(state, decider)

    @asgi("/auth", is_mount=True, copy_scope=False)
    async def auth(scope: Scope, receive: Receive, send: Send) -> None:
        await endpoint(scope, receive, send)  # type: ignore[arg-type]

    def answer(probe: ProbeAnswer) -> Response[bytes]:
        # Litestar appends "; charset=utf-8" to a text media type itself.
        media_type = MediaType.TEXT if probe.content_type == probes.TEXT else probe.content_type
        return Response(probe.body, status_code=probe.status, media_type=media_type)

    @get("/healthz", sync_to_thread=False)
    def healthz() -> Response[bytes]:
        return answer(probes.healthz(state))

    @get("/readyz", sync_to_thread=False)
    def readyz() -> Response[bytes]:
        return answer(probes.readyz(state))

    @get("/metrics", sync_to_thread=False)
    def metrics() -> Response[bytes]:
        return answer(probes.metrics(state))

    app = Litestar(
        route_handlers=[auth, healthz, readyz, metrics, *pages],
        lifespan=[] if lifespan is None else [lifespan],
        openapi_config=None,
        logging_config=None,
    )
    app.state.authgate = state
    app.state.decider = decider
    app.state.decision_endpoint = endpoint
    return app
