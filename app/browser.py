"""The browser wire: the sign-in and sign-out forms that issue and clear the session cookie (app.sessions).

People reach these pages through the same ingress as the application (``sign_in.prefix``, ``/authgate/`` by
default, routed to authgate), so the cookie is the application host's own. What they do:

- ``GET <prefix>sign_in?rd=<path>``: the form; ``POST`` it (user name, password): the password is checked
  exactly as a Basic one (app.decision.check_password: the same throttle, decoys and verified cache), then a
  session cookie is set and the browser is sent (303) to ``rd`` (a path on this host, app.redirects, else
  ``/``); any failure is 401 with the same page and one text, ``Sign-in failed.``;
- ``GET <prefix>sign_out``: a page with one button; ``POST`` it: the cookie is cleared, 303 to the form;
- ``GET <prefix>userinfo``: who the session is (JSON), or 401.

Every POST is checked against cross-site request forgery twice: the browser's own account of where the form
came from (``Sec-Fetch-Site: same-origin``, else ``Origin`` against ``Host``) and a double-submit token (a
random value in an HttpOnly ``SameSite=Strict`` cookie ``<cookie_name>-csrf``, repeated in the form, compared in
constant time). No page or log line carries a password, a token or a cookie's value.

Like the other wires it turns its protocol into a question for the core and knows nothing of the other wires;
the composition root (app.service) mounts it only when a route lists ``session``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import html
import logging
import secrets
import urllib.parse
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.handlers import HTTPRouteHandler

from app.credentials import User
from app.decision import check_password
from app.doors.base import last_hop
from app.oidc_client import OidcClient, Person, Refusal, new_secret
from app.oidc_flow import FLOW_SECONDS, FlowState, open_flow, seal_flow, state_matches
from app.redirects import safe_redirect
from app.sessions import cookie_values, issue, issue_oidc, load, set_cookie
from app.slow_checks import SlowChecks
from app.state import AppState

log = logging.getLogger("authgate.browser")

FAILED = "Sign-in failed."
FORM_MAX_BYTES = 8192
MAX_NAME_CHARS = 255
MAX_PASSWORD_CHARS = 1024
CSRF_MAX_AGE = 3600
# A session cookie past this is refused at sign-in (browsers keep at most 4096 bytes a cookie, name included).
MAX_SESSION_COOKIE_CHARS = 3800
# OpenID code exchanges at once (each a worker thread waiting on the provider); more answer 503.
MAX_PENDING_EXCHANGES = 16
_FORM_TYPE = "application/x-www-form-urlencoded"
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:22rem;margin:4rem auto;padding:0 1rem}"
    "label,input,button{display:block;width:100%;box-sizing:border-box;margin:.4rem 0}"
    "input,button,a.button{padding:.5rem;font-size:1rem}.error{color:#b00020}"
    "a.button{display:block;text-align:center;border:1px solid #555;border-radius:3px;color:inherit;"
    "text-decoration:none;box-sizing:border-box}"
)


_DEFAULT_PORTS = {"https": "443", "http": "80"}
_REFUSED = "The sign-in provider's answer was not accepted."
_REFUSALS = {
    "code_refused": "This sign-in was already used or has expired.",
    "email_unverified": "Your e-mail address is not verified by the sign-in provider.",
    "no_principal": "The sign-in provider did not say who you are.",
    "provider_unreachable": "The sign-in provider cannot be reached; try again shortly.",
    "provider_unavailable": "The sign-in provider cannot be reached; try again shortly.",
}


class BrowserEndpoints:
    """The pages and their checks; :meth:`handlers` are the Litestar route handlers that serve them."""

    def __init__(self, state: AppState, slow_checks: SlowChecks) -> None:
        self.state = state
        self.slow_checks = slow_checks  # the decision core's bound on waiting slow checks, shared
        self.settings = state.policy.session
        # Default: the realm of the browsers' route, the one offering the session first (the chart's UI parts),
        # else of any session route (route names sort, so "api" would come before "ui").
        routes = list(state.policy.routes.values())
        self.title = self.settings.title or next(
            (route.realm for route in routes if route.schemes[:1] == ("session",)),
            next((route.realm for route in routes if "session" in route.schemes), "authgate"),
        )
        # Sign-in with an OpenID provider (app.oidc_client): its metadata and keys, fetched on first need.
        self.oidc = OidcClient(self.settings.oidc) if self.settings.oidc is not None else None
        self.exchanges = 0
        self.security_headers = {
            "cache-control": "no-store",
            "content-security-policy": self._csp(),
            "x-frame-options": "DENY",
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
        }

    def _csp(self) -> str:
        # The sign-out form's answer may send the browser on to the provider's end-session endpoint, which
        # form-action must allow (browsers apply it to the redirects after a form's submission too).
        form_action = "'self'"
        if self.oidc is not None and self.oidc.metadata is not None and self.oidc.metadata.end_session_endpoint:
            parts = urllib.parse.urlsplit(self.oidc.metadata.end_session_endpoint)
            form_action += f" {parts.scheme}://{parts.netloc}"
        return (
            f"default-src 'none'; style-src 'unsafe-inline'; form-action {form_action}; frame-ancestors 'none'; "
            "base-uri 'none'"
        )

    # -- answers ----------------------------------------------------------------------------------------------

    def _page(
        self, status: int, title: str, body: str, cookies: list[Cookie], headers: dict[str, str] | None = None
    ) -> Response[bytes]:
        document = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{body}</body></html>"
        )
        return Response(
            document.encode(),
            status_code=status,
            media_type="text/html; charset=utf-8",
            headers={**self.security_headers, "content-security-policy": self._csp(), **(headers or {})},
            cookies=cookies,
        )

    def _csrf_cookie(self, value: str) -> Cookie:
        return Cookie(
            key=self.settings.csrf_cookie_name,
            value=value,
            max_age=CSRF_MAX_AGE,
            path="/",
            secure=True,
            httponly=True,
            samesite="strict",
        )

    def _csrf_token(self, request: Request[Any, Any, Any]) -> str:
        """The double-submit token: the browser's current one if it holds a well-formed one, else a new one."""
        current = request.cookies.get(self.settings.csrf_cookie_name, "")
        if len(current) == 43 and all(ch.isalnum() or ch in "-_" for ch in current):
            return current
        return secrets.token_urlsafe(32)

    def sign_in_form(
        self,
        request: Request[Any, Any, Any],
        rd: str,
        status: int = 200,
        error: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response[bytes]:
        token = self._csrf_token(request)
        message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
        body = message
        if self.oidc is not None:
            start = f"{self.settings.oidc_start_path}?{urllib.parse.urlencode({'rd': safe_redirect(rd)})}"
            name = html.escape(self.oidc.settings.display_name)
            body += (
                f'<p><a class="button" id="oidc" href="{html.escape(start, quote=True)}">Sign in with {name}</a></p>'
            )
        snapshot = self.state.store.current
        # The password form only where there is a password to check (htpasswd users), or nothing loaded yet.
        if self.oidc is None or snapshot is None or snapshot.credentials.users:
            body += (
                f'<form method="post" action="{self.settings.sign_in_path}">'
                f'<input type="hidden" name="csrf" value="{token}">'
                f'<input type="hidden" name="rd" value="{html.escape(rd, quote=True)}">'
                '<label for="username">User name</label>'
                '<input id="username" name="username" autocomplete="username" required autofocus>'
                '<label for="password">Password</label>'
                '<input id="password" name="password" type="password" autocomplete="current-password" required>'
                '<button type="submit">Sign in</button></form>'
            )
        return self._page(status, self.title, body, [self._csrf_cookie(token)], headers)

    def sign_in_again(
        self, request: Request[Any, Any, Any], status: int, message: str, rd: str = "/", clear_flow: bool = True
    ) -> Response[bytes]:
        """A failed OpenID sign-in: what went wrong in one sentence, and a link to sign in again."""
        again = f"{self.settings.sign_in_path}?{urllib.parse.urlencode({'rd': safe_redirect(rd)})}"
        body = (
            f'<p class="error" role="alert">{html.escape(message)}</p>'
            f'<p><a id="again" href="{html.escape(again, quote=True)}">Sign in again</a></p>'
        )
        cookies = [self._flow_cookie("", 0)] if clear_flow else []
        return self._page(status, self.title, body, cookies)

    def _flow_cookie(self, value: str, max_age: int) -> Cookie:
        return Cookie(
            key=self.settings.flow_cookie_name,
            value=value,
            max_age=max_age,
            path="/",
            secure=True,
            httponly=True,
            samesite="lax",
        )

    def sign_out_form(self, request: Request[Any, Any, Any], status: int = 200) -> Response[bytes]:
        token = self._csrf_token(request)
        body = (
            f'<form method="post" action="{self.settings.sign_out_path}">'
            f'<input type="hidden" name="csrf" value="{token}">'
            '<button type="submit">Sign out</button></form>'
        )
        return self._page(status, "Sign out", body, [self._csrf_cookie(token)])

    def _redirect(self, location: str, session_cookie: str) -> Response[bytes]:
        headers = {**self.security_headers, "location": location, "set-cookie": session_cookie}
        return Response(b"", status_code=303, headers=headers)

    # -- checks -----------------------------------------------------------------------------------------------

    @staticmethod
    def own_host(request: Request[Any, Any, Any]) -> str | None:
        host = request.headers.get("host")
        return host.strip().lower() if host else None

    def _same_origin(self, request: Request[Any, Any, Any]) -> bool:
        """Whether the browser says the form was posted from this very origin."""
        site = request.headers.get("sec-fetch-site")
        if site is not None:
            return site == "same-origin"
        origin = request.headers.get("origin")
        if origin is None:
            return True  # no browser signal (an old browser): the double-submit token alone decides
        try:
            netloc = urllib.parse.urlsplit(origin).netloc.lower()
        except ValueError:
            return False
        return origin != "null" and netloc == self.own_host(request)

    async def _form(self, request: Request[Any, Any, Any]) -> dict[str, str] | None:
        """The posted form's fields (the first value of each), or None when the body is no such form."""
        content_type = request.headers.get("content-type", "")
        if content_type.split(";", 1)[0].strip().lower() != _FORM_TYPE:
            return None
        body = await request.body()
        try:
            pairs = urllib.parse.parse_qsl(
                body.decode("utf-8"), keep_blank_values=True, max_num_fields=8, errors="strict"
            )
        except (UnicodeDecodeError, ValueError):
            return None
        fields: dict[str, str] = {}
        for key, value in pairs:
            fields.setdefault(key, value)
        return fields

    def _csrf_ok(self, request: Request[Any, Any, Any], fields: dict[str, str]) -> bool:
        cookie = request.cookies.get(self.settings.csrf_cookie_name, "")
        sent = fields.get("csrf", "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), sent.encode()) and self._same_origin(request)

    def client(self, request: Request[Any, Any, Any]) -> str | None:
        """The address the proxy in front saw (the last X-Forwarded-For hop), else the peer."""
        hop = last_hop(request.headers.get("x-forwarded-for", "").encode("latin-1") or None)
        if hop is not None:
            return hop.decode("latin-1")
        return request.client.host if request.client is not None else None

    async def _verify(self, client: str | None, name: str, password: str) -> User | str:
        """check_password, a slow hash check in a worker thread under the decision core's one bound on waiting
        checks (app.slow_checks, shared with HTTP and gRPC decisions); past it, ``busy``."""
        snapshot = self.state.store.current
        assert snapshot is not None
        throttle = self.state.throttle
        outcome = check_password(snapshot, throttle, client, name, password, False)
        if outcome is not None:
            return outcome
        outcome = await self.slow_checks.run(check_password, snapshot, throttle, client, name, password, True)
        return "busy" if outcome is None else outcome

    def _count(self, result: str) -> None:
        self.state.metrics.sign_ins.labels(result=result).inc()

    # -- the pages --------------------------------------------------------------------------------------------

    async def sign_in(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Every failure is the same 401 page with one text (FAILED): a bad form, a CSRF check, a throttle or a
        wrong password look alike; the metric and the log line say which. Nothing loaded yet: 503."""
        fields = await self._form(request)
        rd = fields.get("rd", "/") if fields is not None else "/"
        if fields is None or not self._csrf_ok(request, fields):
            return self._failed(request, rd, "bad_request" if fields is None else "forbidden", None)
        if self.state.store.current is None:
            self._count("not_ready")
            return self.sign_in_form(request, rd, 503, "Sign-in is not available yet; try again.", {"retry-after": "1"})
        name, password = fields.get("username", ""), fields.get("password", "")
        client = self.client(request)
        if (
            not name
            or len(name) > MAX_NAME_CHARS
            or len(password) > MAX_PASSWORD_CHARS
            or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name + password)
        ):
            return self._failed(request, rd, "bad_request", client)
        outcome = await self._verify(client, name, password)
        if isinstance(outcome, str):
            return self._failed(request, rd, outcome if outcome in ("throttled", "busy") else "bad_credentials", client)
        snapshot = self.state.store.current
        assert snapshot is not None
        value, session = issue(snapshot.credentials, outcome, self.state.clock().timestamp(), self.settings)
        self._count("signed_in")
        log.info(
            "signed in",
            extra={"event": "sign_in", "result": "signed_in", "principal": outcome.name, "client": client},
        )
        return self._redirect(safe_redirect(rd), set_cookie(self.settings, value, session.expires - session.issued))

    def _failed(self, request: Request[Any, Any, Any], rd: str, result: str, client: str | None) -> Response[bytes]:
        self._count(result)
        log.info("sign-in refused", extra={"event": "sign_in", "result": result, "client": client})
        return self.sign_in_form(request, rd, 401, FAILED)

    async def sign_out(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        fields = await self._form(request)
        if fields is None or not self._csrf_ok(request, fields):
            self._count("forbidden" if fields is not None else "bad_request")
            return self.sign_out_form(request, 403 if fields is not None else 400)
        self._count("signed_out")
        session = self._session(request)
        location = self.settings.sign_in_path
        if self.oidc is not None and session is not None and session.via == "oidc":
            # The provider's own sign-out too, where it lists one; it sends the browser back to the sign-in page.
            ended = self.oidc.end_session_url(self._origin(request) + self.settings.sign_in_path)
            if ended is not None:
                self._count_oidc("signed_out_at_provider")
                location = ended
        return self._redirect(location, set_cookie(self.settings, "", 0))

    def _session(self, request: Request[Any, Any, Any]) -> Any:
        snapshot = self.state.store.current
        values = cookie_values(request.headers.get("cookie", "").encode("latin-1"), self.settings.cookie_name.encode())
        if snapshot is None or not values:
            return None
        session, _, _ = load(values, snapshot.credentials, self.settings, self.state.clock().timestamp())
        return session

    # -- sign-in with an OpenID provider ----------------------------------------------------------------------

    @staticmethod
    def _origin(request: Request[Any, Any, Any]) -> str:
        """``scheme://host`` as the browser used it: the proxy's X-Forwarded-Proto (https when it says
        nothing), and the Host header, which the ingress passes on. A forged one only makes a redirect_uri the
        provider does not have registered, which it refuses."""
        proto = request.headers.get("x-forwarded-proto", "").split(",", 1)[0].strip().lower()
        scheme = proto if proto in ("http", "https") else "https"
        host = BrowserEndpoints.own_host(request) or "localhost"
        # ingress-nginx passes Host without the port and says it in X-Forwarded-Port: a port other than the
        # scheme's own is the browser's too.
        port = request.headers.get("x-forwarded-port", "").strip()
        if port.isdigit() and not host.endswith("]") and ":" not in host and port != _DEFAULT_PORTS[scheme]:
            host = f"{host}:{port}"
        return f"{scheme}://{host}"

    def _count_oidc(self, result: str) -> None:
        self.state.metrics.oidc_sign_ins.labels(result=result).inc()

    def _oidc_failed(
        self, request: Request[Any, Any, Any], result: str, status: int, message: str, rd: str = "/"
    ) -> Response[bytes]:
        self._count_oidc(result)
        log.info(
            "OpenID sign-in refused",
            extra={"event": "oidc_sign_in", "result": result, "client": self.client(request)},
        )
        return self.sign_in_again(request, status, message, rd)

    async def oidc_start(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """The start of an OpenID sign-in: a new state, nonce and PKCE verifier sealed into the flow cookie,
        and the browser sent to the provider's authorization endpoint."""
        assert self.oidc is not None
        rd = safe_redirect(request.query_params.get("rd", "/"))
        snapshot = self.state.store.current
        if snapshot is None:
            return self._oidc_failed(request, "not_ready", 503, "Sign-in is not available yet; try again.", rd)
        if snapshot.credentials.oidc_secrets.get(self.oidc.settings.client_secret_key) is None:
            return self._oidc_failed(
                request, "no_client_secret", 503, "Sign-in with the provider is not set up (no client secret).", rd
            )
        metadata = self.oidc.metadata if self.oidc.ready else await asyncio.to_thread(self.oidc.discover)
        if metadata is None:
            return self._oidc_failed(
                request, "provider_unavailable", 503, "The sign-in provider cannot be reached; try again shortly.", rd
            )
        keys = snapshot.credentials.session_keys
        assert keys is not None, "a policy with session routes is never loaded without session-keys"
        redirect_uri = self.oidc.settings.redirect_url or self._origin(request) + self.settings.oidc_callback_path
        now = int(self.state.clock().timestamp())
        flow = FlowState(new_secret(), new_secret(), new_secret(), rd, redirect_uri, now + FLOW_SECONDS)
        location = self.oidc.authorization_url(metadata, redirect_uri, flow.state, flow.nonce, flow.verifier)
        self._count_oidc("started")
        response: Response[bytes] = Response(
            b"",
            status_code=303,
            headers={**self.security_headers, "location": location},
            cookies=[self._flow_cookie(seal_flow(keys, flow), FLOW_SECONDS)],
        )
        return response

    async def oidc_callback(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """The provider's redirect back: the flow cookie's state against the one sent (constant time), the
        code traded for tokens (in a worker thread), the ID token checked, then a session as for the form.
        Every failure is a page that offers to sign in again, and the flow cookie is cleared either way."""
        assert self.oidc is not None
        snapshot = self.state.store.current
        if snapshot is None:
            return self._oidc_failed(request, "not_ready", 503, "Sign-in is not available yet; try again.")
        now = self.state.clock().timestamp()
        values = cookie_values(
            request.headers.get("cookie", "").encode("latin-1"), self.settings.flow_cookie_name.encode()
        )
        flow = open_flow(snapshot.credentials.session_keys, values, now)
        if isinstance(flow, str):
            return self._oidc_failed(request, flow, 400, "This sign-in has expired or was not started here.")
        params = request.query_params
        if not state_matches(flow, params.get("state")):
            return self._oidc_failed(request, "bad_state", 400, "This sign-in does not match the one started here.")
        sent_iss = params.get("iss")
        if sent_iss is not None and sent_iss != self.oidc.settings.issuer:
            # RFC 9207: the answer names another provider (a mix-up): its code must go nowhere.
            return self._oidc_failed(request, "wrong_issuer", 400, _REFUSED, flow.rd)
        if params.get("error") is not None or not params.get("code"):
            return self._oidc_failed(
                request, "provider_refused", 401, "The sign-in provider did not sign you in.", flow.rd
            )
        secret = snapshot.credentials.oidc_secrets.get(self.oidc.settings.client_secret_key)
        if secret is None:
            return self._oidc_failed(
                request, "no_client_secret", 503, "Sign-in with the provider is not set up.", flow.rd
            )
        if self.exchanges >= MAX_PENDING_EXCHANGES:
            return self._oidc_failed(request, "busy", 503, "Too many sign-ins at once; try again.", flow.rd)
        self.exchanges += 1
        try:
            outcome = await asyncio.to_thread(
                self.oidc.exchange,
                params.get("code", ""),
                flow.redirect_uri,
                flow.verifier,
                flow.nonce,
                secret,
                now,
                self.settings.groups,
            )
        finally:
            self.exchanges -= 1
        if isinstance(outcome, Refusal):
            status = 503 if outcome.reason in ("provider_unreachable", "provider_unavailable") else 401
            return self._oidc_failed(request, outcome.reason, status, _REFUSALS.get(outcome.reason, _REFUSED), flow.rd)
        return self._oidc_signed_in(request, outcome, flow, now)

    def _oidc_signed_in(
        self, request: Request[Any, Any, Any], person: Person, flow: FlowState, now: float
    ) -> Response[bytes]:
        snapshot = self.state.store.current
        assert snapshot is not None
        value, session = issue_oidc(
            snapshot.credentials, person.principal, person.groups, person.email, now, self.settings
        )
        if len(value) + len(self.settings.cookie_name) > MAX_SESSION_COOKIE_CHARS:
            log.warning(
                "OpenID sign-in refused: the session would not fit in a cookie",
                extra={"event": "oidc_sign_in", "result": "too_large", "principal": person.principal},
            )
            return self._oidc_failed(request, "too_large", 401, _REFUSED, flow.rd)
        self._count_oidc("signed_in")
        log.info(
            "signed in",
            extra={
                "event": "oidc_sign_in",
                "result": "signed_in",
                "principal": person.principal,
                "groups": list(person.groups),
                "client": self.client(request),
            },
        )
        headers = {**self.security_headers, "location": flow.rd}
        response: Response[bytes] = Response(
            b"",
            status_code=303,
            headers=headers,
            cookies=[self._flow_cookie("", 0)],
        )
        response.headers["set-cookie"] = set_cookie(self.settings, value, session.expires - session.issued)
        return response

    def userinfo(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Who the browser's session is: ``{"user", "via", "expires"}`` (``expires``: when it ends unless used
        again, the earlier of its absolute and idle ends, RFC 3339), or 401 ``{"error": "not signed in"}``."""
        snapshot = self.state.store.current
        values = cookie_values(request.headers.get("cookie", "").encode("latin-1"), self.settings.cookie_name.encode())
        session = None
        if snapshot is not None and values:
            session, _, _ = load(values, snapshot.credentials, self.settings, self.state.clock().timestamp())
        headers = {"cache-control": "no-store"}
        if session is None:
            return Response({"error": "not signed in"}, status_code=401, headers=headers)
        ends = dt.datetime.fromtimestamp(session.ends, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body: dict[str, Any] = {"user": session.user, "via": session.via, "expires": ends}
        if session.via == "oidc":
            body.update(groups=list(session.groups), email=session.email)
        return Response(body, headers=headers)

    def handlers(self) -> list[HTTPRouteHandler]:
        """The Litestar route handlers of these pages (bodies capped at FORM_MAX_BYTES: 413 beyond)."""
        endpoints = self
        settings = self.settings

        @get(settings.sign_in_path, sync_to_thread=False)
        def sign_in_page(request: Request[Any, Any, Any]) -> Response[bytes]:
            return endpoints.sign_in_form(request, request.query_params.get("rd", "/"))

        @post(settings.sign_in_path, request_max_body_size=FORM_MAX_BYTES)
        async def sign_in(request: Request[Any, Any, Any]) -> Response[bytes]:
            return await endpoints.sign_in(request)

        @get(settings.sign_out_path, sync_to_thread=False)
        def sign_out_page(request: Request[Any, Any, Any]) -> Response[bytes]:
            return endpoints.sign_out_form(request)

        @post(settings.sign_out_path, request_max_body_size=FORM_MAX_BYTES)
        async def sign_out(request: Request[Any, Any, Any]) -> Response[bytes]:
            return await endpoints.sign_out(request)

        @get(settings.userinfo_path, sync_to_thread=False)
        def userinfo(request: Request[Any, Any, Any]) -> Response[Any]:
            return endpoints.userinfo(request)

        handlers = [sign_in_page, sign_in, sign_out_page, sign_out, userinfo]
        if self.oidc is not None:

            @get(settings.oidc_start_path)
            async def oidc_start(request: Request[Any, Any, Any]) -> Response[bytes]:
                return await endpoints.oidc_start(request)

            @get(settings.oidc_callback_path)
            async def oidc_callback(request: Request[Any, Any, Any]) -> Response[bytes]:
                return await endpoints.oidc_callback(request)

            handlers += [oidc_start, oidc_callback]
        return handlers
