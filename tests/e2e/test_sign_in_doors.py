"""A person signs in to the UI in headless Chromium through each front door, wired by the chart's own render.

For every door the chart's ``signIn.enabled`` values are rendered with the real helm, and authgate runs on the
render's Secret (its generated ``session-keys`` included) and policy. The doors, each from that render:

- ``nginx``: real nginx as ingress-nginx v1.15 renders the Ingresses (``auth-signin`` turning authgate's 401
  into the redirect, ``auth-always-set-cookie``, the sign-in Ingress to authgate), over HTTPS with a
  self-signed certificate, the browser asking for ``https://prefect.example.com:PORT`` (the only translation:
  ``auth-signin``'s ``https://$host`` becomes ``https://$http_host``, nginx listening on a free port);
- ``traefik``: real Traefik 3.7 with the rendered ForwardAuth Middlewares (``addAuthCookiesToResponse``) and
  the sign-in Ingress, authgate answering the navigation with its own 302, absolute on the original host
  (Traefik resolves a relative one against authgate's address; every sign-in page is checked for its host);
- ``envoy-gateway``: a real Envoy 1.40 configured as Envoy Gateway translates the rendered HTTPRoutes and
  SecurityPolicies (``headersToExtAuth`` with the sign-in headers; the sign-in HTTPRoute without a policy).

Traefik and Envoy are browsed at ``http://localhost:PORT``: Chromium counts ``localhost`` as a secure
context, so the ``Secure`` ``__Host-`` cookie is kept over plain HTTP (seen with Chromium 156).

The flow (issue 22): open the UI -> the sign-in page -> a wrong password (one generic error) -> the right one
-> back at the page first asked for, whose same-origin ``fetch`` (a POST) and WebSocket to ``/api`` pass on
the session; machines' tokens keep working on the same routes; sign out -> the next navigation goes to the
sign-in page; a tampered cookie, a cookie sealed with a key no longer listed, or one of a removed user ->
the sign-in page; a cross-site form POST -> refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app import sessions
from app.credentials import User
from app.session_keys import parse_session_keys
from app.sessions import Session
from tests.chart.render import PREFECT_VALUES, RELEASE, SCENARIOS, Render
from tests.e2e.chart import RenderedAuthgate, credential_values, nginx_ingress_specs, traefik_routes
from tests.e2e.conftest import Upstream, bearer
from tests.e2e.envoy_doors import LISTENER, envoy_gateway
from tests.e2e.nginx import NginxProcess
from tests.e2e.traefik import TraefikProcess
from tests.support.browser import Browser, self_signed_certificate
from tests.support.envoy import EnvoyProcess
from tests.support.procs import AuthgateProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.helm, pytest.mark.xdist_group("sign-in-doors")]

NGINX_HOST = "prefect.example.com"
USER, PASSWORD = "alice", "sign-in-e2e-password"
OTHER_USER, OTHER_PASSWORD = "bob", "sign-in-e2e-other-password"
WORKER_TOKEN = "sign-in-e2e-worker-token-0123456789abcdef"
COOKIE = "__Host-authgate"
DOORS = ("nginx", "traefik", "envoy-gateway")


@dataclass
class Door:
    name: str
    origin: str  # what the browser types: scheme://host:port
    resolve: dict[str, str]
    authgate: AuthgateProcess
    files: RenderedAuthgate
    render: Render

    def url(self, path: str) -> str:
        return self.origin + path


def _values(door: str) -> list[str]:
    credentials = credential_values(
        {"worker": (WORKER_TOKEN, "routes=api")}, {USER: PASSWORD, OTHER_USER: OTHER_PASSWORD}
    )
    if door == "nginx":
        return ["-f", str(PREFECT_VALUES), "--set", "signIn.enabled=true", *credentials]
    if door == "traefik":
        return [*SCENARIOS["sign-in-traefik"], "--set", "ingress.host=localhost", *credentials]
    # Envoy Gateway: the HTTPRoutes without hostnames (every host), authgate beside them.
    return [*SCENARIOS["sign-in-envoy-gateway"], "--set", "ingress.host=", "--set", "ingress.namespace=", *credentials]


@pytest.fixture(scope="module", params=DOORS)
def door(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[Door]:
    name: str = request.param
    workdir = tmp_path_factory.mktemp(f"sign-in-{name}")
    render = Render.of(f"sign-in-{name}", _values(name))
    files = RenderedAuthgate.lay_out(render, workdir)
    with ExitStack() as stack:
        authgate = files.process(workdir / "authgate.log")
        stack.callback(authgate.stop)
        authgate.wait_ready()
        if name == "nginx":
            specs = nginx_ingress_specs(render, authgate_port=authgate.port, backend=upstream.address)
            tls = self_signed_certificate(workdir / "tls", [NGINX_HOST])
            nginx = NginxProcess(specs, workdir / "nginx", tls=tls).start()
            stack.callback(nginx.stop)
            yield Door(name, f"https://{NGINX_HOST}:{nginx.port}", {NGINX_HOST: "127.0.0.1"}, authgate, files, render)
        elif name == "traefik":
            routes = traefik_routes(render, authgate_port=authgate.port, backend=upstream.address)
            traefik = TraefikProcess(routes, workdir / "traefik").start()
            stack.callback(traefik.stop)
            yield Door(name, f"http://localhost:{traefik.port}", {}, authgate, files, render)
        else:

            def address(ref: dict[str, Any]) -> int:
                return authgate.port if ref["name"] == RELEASE else upstream.port

            config = envoy_gateway(render, listen_port=free_port(), address=address)
            envoy = EnvoyProcess(config, workdir / "envoy", name="envoy-gateway")
            stack.enter_context(envoy)
            yield Door(name, f"http://localhost:{envoy.listener_port(LISTENER)}", {}, authgate, files, render)


def _wait_for_calls(page: Any) -> tuple[str, str]:
    """What the stand-in UI's same-origin fetch and WebSocket got."""
    page.wait_for_function("document.getElementById('fetch').textContent !== 'pending'")
    page.wait_for_function("document.getElementById('ws').textContent !== 'pending'")
    return page.inner_text("#fetch").strip(), page.inner_text("#ws").strip()


def _sign_in(page: Any, user: str, password: str) -> Any:
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    with page.expect_navigation() as navigation:
        page.click("form [type=submit]")
    return navigation.value


def _on_sign_in_page(page: Any, door: Door, rd: str) -> None:
    url = urlsplit(page.url)
    # On the host the browser asked for (never authgate's own address: Traefik resolves a relative Location
    # against it), over the same scheme.
    assert f"{url.scheme}://{url.netloc}" == door.origin, page.url
    assert url.path == "/authgate/sign_in", page.url
    assert parse_qs(url.query).get("rd") == [rd], page.url
    assert page.title() == "prefect"  # the UI route's realm (the route offering the session first)
    for field in ("username", "password", "csrf", "rd"):
        assert page.locator(f"form input[name={field}]").count() == 1, field


def _session_cookie(browser: Browser) -> dict[str, Any]:
    [cookie] = [c for c in browser.cookies() if c["name"] == COOKIE]
    return cookie


def _signed_in(door: Door, browser: Browser, path: str = "/flows/run-1?tab=logs") -> Any:
    page = browser.page()
    page.goto(door.url(path))
    _on_sign_in_page(page, door, path)
    response = _sign_in(page, USER, PASSWORD)
    assert response is not None and response.status == 200
    assert page.url == door.url(path)
    return page


def test_a_person_signs_in_and_the_ui_its_calls_and_its_socket_pass(door: Door, tmp_path: Path) -> None:
    with Browser(tmp_path, resolve=door.resolve) as browser:
        page = browser.page()
        first = "/flows/run-1?tab=logs"
        response = page.goto(door.url(first))
        assert response is not None and response.status == 200  # the sign-in page, never a Basic prompt
        _on_sign_in_page(page, door, first)
        assert response.headers.get("cache-control") == "no-store"
        assert "www-authenticate" not in response.headers

        failed = _sign_in(page, USER, "wrong-password")
        assert failed is not None and failed.status == 401
        assert "Sign-in failed." in page.content()
        assert not [c for c in browser.cookies() if c["name"] == COOKIE]
        failed = _sign_in(page, "nobody", "wrong-password")
        assert failed is not None and failed.status == 401
        assert "Sign-in failed." in page.content()  # the same words, whichever part was wrong

        done = _sign_in(page, USER, PASSWORD)
        assert done is not None and done.status == 200
        assert page.url == door.url(first)  # back at the page first asked for
        assert page.inner_text("#path") == first
        assert page.inner_text("#user") == USER
        assert _wait_for_calls(page) == (f"200 {USER}", f"open {USER}")
        cookie = _session_cookie(browser)
        assert (cookie["secure"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, True, "Lax", "/")
        assert not cookie["domain"].startswith(".")  # host-only: no Domain attribute

        userinfo = browser.page()
        answer = userinfo.goto(door.url("/authgate/userinfo"))
        assert answer is not None and answer.status == 200
        assert json.loads(userinfo.inner_text("body"))["user"] == USER


def test_machines_keep_their_tokens_on_the_same_routes(door: Door) -> None:
    with httpx.Client(verify=False, timeout=10) as client:  # the test's own self-signed certificate
        host = {"Host": urlsplit(door.origin).netloc}
        base = door.origin.replace(urlsplit(door.origin).hostname or "", "127.0.0.1", 1)
        assert client.get(base + "/api/flows", headers={**host, **bearer(WORKER_TOKEN)}).status_code == 200
        # An API call without a credential gets the challenge, never a redirect.
        answer = client.get(base + "/api/flows", headers={**host, "Accept": "application/json"})
        assert answer.status_code == 401
        assert "location" not in answer.headers
        assert answer.headers.get_list("www-authenticate")


def test_sign_out_sends_the_next_navigation_to_the_sign_in_page(door: Door, tmp_path: Path) -> None:
    with Browser(tmp_path, resolve=door.resolve) as browser:
        page = _signed_in(door, browser)
        # The sign-out form: the csrf token the sign-in page carries, posted from the same origin.
        page.goto(door.url("/authgate/sign_in?rd=/"))
        csrf = page.get_attribute("form input[name=csrf]", "value")
        # The page already is the sign-in page: wait for the sign-out answer itself, not for a URL.
        with page.expect_navigation() as signed_out:
            page.evaluate(
                """csrf => { const f = document.createElement('form'); f.method = 'post';
                    f.action = '/authgate/sign_out'; const i = document.createElement('input'); i.type = 'hidden';
                    i.name = 'csrf'; i.value = csrf; f.appendChild(i); document.body.appendChild(f); f.submit(); }""",
                csrf,
            )
        assert signed_out.value is not None and urlsplit(page.url).path == "/authgate/sign_in"
        assert not [c for c in browser.cookies() if c["name"] == COOKIE]
        page.goto(door.url("/flows"))
        _on_sign_in_page(page, door, "/flows")


def test_a_tampered_cookie_goes_to_the_sign_in_page(door: Door, tmp_path: Path) -> None:
    with Browser(tmp_path, resolve=door.resolve) as browser:
        page = _signed_in(door, browser)
        cookie = _session_cookie(browser)
        flipped = cookie["value"][:-2] + ("A" if cookie["value"][-2] != "A" else "B") + cookie["value"][-1]
        browser.context.add_cookies([{**cookie, "value": flipped}])
        page.goto(door.url("/deployments"))
        _on_sign_in_page(page, door, "/deployments")


def _sealed_for(door: Door, issued_ago: int, lifetime: int, idle: int) -> str:
    """A session of USER's sealed with the render's own key and their htpasswd line, ``issued_ago`` seconds
    ago, ending ``lifetime`` (absolute) and ``idle`` seconds after issue: a cookie authgate itself could have
    set, but already over."""
    secret = door.render.one("Secret", RELEASE)["stringData"]
    [line] = [line for line in secret["htpasswd"].splitlines() if line.startswith(f"{USER}:")]
    user = User(name=USER, hash=line.split(":", 1)[1], kind="")
    issued = int(time.time()) - issued_ago
    session = Session(USER, "form", issued, issued + lifetime, issued + idle)
    return sessions._seal(parse_session_keys(secret["session-keys"]), session, user)


@pytest.mark.parametrize("over", ["lifetime", "idle"])
def test_an_expired_cookie_goes_to_the_sign_in_page(door: Door, tmp_path: Path, over: str) -> None:
    with Browser(tmp_path, resolve=door.resolve) as browser:
        page = _signed_in(door, browser)
        cookie = _session_cookie(browser)
        # Issued 13 hours ago (lifetime 12h), or 2 hours ago and idle for more than the 1h idle timeout.
        expired = (
            _sealed_for(door, 13 * 3600, 12 * 3600, 3600)
            if over == "lifetime"
            else _sealed_for(door, 7200, 12 * 3600, 3600)
        )
        browser.context.add_cookies([{**cookie, "value": expired}])
        page.goto(door.url("/deployments?page=2"))
        _on_sign_in_page(page, door, "/deployments?page=2")


def test_a_cookie_of_a_key_no_longer_listed_goes_to_the_sign_in_page(door: Door, tmp_path: Path) -> None:
    secret = door.render.one("Secret", RELEASE)["stringData"]
    try:
        with Browser(tmp_path, resolve=door.resolve) as browser:
            page = _signed_in(door, browser)
            # A new key replaces the one that sealed the cookie (kubelet swaps the mounted Secret).
            new_key = base64.urlsafe_b64encode(hashlib.sha256(b"another key").digest()).decode()
            door.files.secret.write({**secret, "session-keys": new_key + "\n"})
            _wait_until_signed_out(door, browser, page)
    finally:
        door.files.secret.write(secret)


def test_a_removed_user_goes_to_the_sign_in_page(door: Door, tmp_path: Path) -> None:
    secret = door.render.one("Secret", RELEASE)["stringData"]
    try:
        with Browser(tmp_path, resolve=door.resolve) as browser:
            page = _signed_in(door, browser)
            kept = "".join(line + "\n" for line in secret["htpasswd"].splitlines() if not line.startswith(f"{USER}:"))
            door.files.secret.write({**secret, "htpasswd": kept})
            _wait_until_signed_out(door, browser, page)
    finally:
        door.files.secret.write(secret)


def _wait_until_signed_out(door: Door, browser: Browser, page: Any) -> None:
    """After a Secret swap (authgate reloads within a second), the next navigation goes to sign-in."""
    for _ in range(50):
        page.goto(door.url("/work-pools"))
        if urlsplit(page.url).path == "/authgate/sign_in":
            _on_sign_in_page(page, door, "/work-pools")
            return
        page.wait_for_timeout(100)
    pytest.fail(f"still signed in through {door.name} after the Secret swap")


def test_a_cross_site_form_post_to_the_api_is_refused(door: Door, upstream: Upstream, tmp_path: Path) -> None:
    with Browser(tmp_path, resolve=door.resolve) as browser:
        _signed_in(door, browser)
        cookie = _session_cookie(browser)
        # A page of another site posting a form to the API: SameSite=Lax keeps the cookie home, and nothing
        # reaches the application.
        target = door.url("/api/flows/filter")
        attacker = f"""<form method="post" action="{target}"><input name="x" value="1"></form>
            <script>document.forms[0].submit()</script>"""
        browser.context.route(
            "https://evil.example/**", lambda route: route.fulfill(body=attacker, content_type="text/html")
        )
        page = browser.page()
        with page.expect_response(lambda response: response.url == target) as posted:
            page.goto("https://evil.example/")
        assert posted.value.request.method == "POST"
        assert posted.value.status in (401, 403)
        # The same POST carrying the cookie (as a same-site attacker could) is refused by the Origin check.
        with httpx.Client(verify=False, timeout=10) as client:  # the test's own self-signed certificate
            base = door.origin.replace(urlsplit(door.origin).hostname or "", "127.0.0.1", 1)
            answer = client.post(
                base + "/api/flows/filter",
                headers={
                    "Host": urlsplit(door.origin).netloc,
                    "Cookie": f"{COOKIE}={cookie['value']}",
                    "Origin": "https://evil.example",
                    "Sec-Fetch-Site": "cross-site",
                    "Content-Type": "application/x-www-form-urlencoded",
                },
                content=b"x=1",
            )
            assert answer.status_code == 403
