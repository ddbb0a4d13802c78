"""A person signs in with an OpenID provider in headless Chromium, through the chart-rendered nginx and Traefik.

The provider is the real npm ``oidc-provider`` (tests/oidc/people.mjs, with its test login form); the chart is
rendered with ``signIn.enabled`` and ``signIn.oidc`` naming it, the UI route admitting ``group:ops`` and
``domain:example.com`` (``config.policy``), and authgate runs on the render's policy and Secret with the client
secret projected beside it as the Deployment does (``oidc-client-secret``). The doors are wired as in
tests/e2e/test_sign_in_doors.py (nginx over HTTPS as ``prefect.example.com``, Traefik at ``localhost``).

The flow (issue 23): open the UI -> the sign-in page, which offers the provider and the password form -> the
provider's login -> back at the page first asked for; a person outside the group and the domain gets 403; a
tampered ID token and a wrong ``state`` get the page that offers to sign in again; sign-out reaches the
provider's end-session endpoint and the next navigation goes to the sign-in page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.chart.render import PREFECT_VALUES, RELEASE, SCENARIOS, Render
from tests.e2e.chart import RenderedAuthgate, credential_values, nginx_ingress_specs, traefik_routes
from tests.e2e.conftest import Upstream
from tests.e2e.nginx import NginxProcess
from tests.e2e.traefik import TraefikProcess
from tests.support.browser import Browser, self_signed_certificate
from tests.support.oidc_people import CLIENT_ID, CLIENT_SECRET, PeopleProvider
from tests.support.procs import AuthgateProcess

pytestmark = [pytest.mark.e2e, pytest.mark.helm, pytest.mark.xdist_group("oidc-sign-in-doors")]

NGINX_HOST = "prefect.example.com"
USER, PASSWORD = "alice-form", "oidc-e2e-form-password"
DOORS = ("nginx", "traefik")
COOKIE = "__Host-authgate"


@dataclass
class Door:
    name: str
    origin: str
    resolve: dict[str, str]
    authgate: AuthgateProcess
    provider: PeopleProvider

    def url(self, path: str) -> str:
        return self.origin + path


def _values(door: str, issuer: str) -> list[str]:
    oidc = [
        *("--set", "signIn.oidc.enabled=true", "--set", f"signIn.oidc.issuer={issuer}"),
        *("--set", f"signIn.oidc.clientId={CLIENT_ID}", "--set", "signIn.oidc.clientSecret.existingSecret=oidc"),
        *("--set", "signIn.oidc.displayName=Test provider"),
        *("--set-json", 'config.policy.routes.ui.principals=["group:ops","domain:example.com"]'),
        *credential_values({}, {USER: PASSWORD}),
    ]
    if door == "nginx":
        return ["-f", str(PREFECT_VALUES), "--set", "signIn.enabled=true", *oidc]
    return [*SCENARIOS["sign-in-traefik"], "--set", "ingress.host=localhost", *oidc]


@pytest.fixture(scope="module", params=DOORS)
def door(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[Door]:
    name: str = request.param
    workdir = tmp_path_factory.mktemp(f"oidc-sign-in-{name}")
    with ExitStack() as stack:
        provider = stack.enter_context(PeopleProvider(workdir / "provider"))
        render = Render.of(f"oidc-sign-in-{name}-{provider.port}", _values(name, provider.issuer))
        files = RenderedAuthgate.lay_out(render, workdir)
        # The Deployment projects the client secret's Secret into the credential directory (tests/chart/test_oidc.py).
        secret = render.one("Secret", RELEASE)["stringData"]
        files.secret.write({**secret, "oidc-client-secret": CLIENT_SECRET + "\n"})
        authgate = files.process(workdir / "authgate.log")
        stack.callback(authgate.stop)
        authgate.wait_ready()
        if name == "nginx":
            specs = nginx_ingress_specs(render, authgate_port=authgate.port, backend=upstream.address)
            tls = self_signed_certificate(workdir / "tls", [NGINX_HOST])
            nginx = NginxProcess(specs, workdir / "nginx", tls=tls).start()
            stack.callback(nginx.stop)
            yield Door(name, f"https://{NGINX_HOST}:{nginx.port}", {NGINX_HOST: "127.0.0.1"}, authgate, provider)
        else:
            routes = traefik_routes(render, authgate_port=authgate.port, backend=upstream.address)
            traefik = TraefikProcess(routes, workdir / "traefik").start()
            stack.callback(traefik.stop)
            yield Door(name, f"http://localhost:{traefik.port}", {}, authgate, provider)


def _on_sign_in_page(page: Any, door: Door, rd: str) -> None:
    url = urlsplit(page.url)
    assert f"{url.scheme}://{url.netloc}" == door.origin, page.url
    assert url.path == "/authgate/sign_in", page.url
    assert parse_qs(url.query).get("rd") == [rd], page.url
    assert page.locator("a#oidc").inner_text() == "Sign in with Test provider"


def _to_provider(page: Any, door: Door, path: str) -> None:
    """Open ``path``, land on the sign-in page, take the provider's button, land on its login form."""
    page.goto(door.url(path))
    _on_sign_in_page(page, door, path)
    page.click("a#oidc")
    page.wait_for_url(re.compile(re.escape(door.provider.issuer) + r"/interaction/.*"))


def _signed_in(door: Door, browser: Browser, account: str, path: str) -> Any:
    page = browser.page()
    _to_provider(page, door, path)
    page.fill("input[name=login]", account)
    page.click("form [type=submit]")
    page.wait_for_url(door.url(path))
    return page


def test_a_person_signs_in_with_the_provider_and_reaches_the_page_first_asked(door: Door, tmp_path: Path) -> None:
    with Browser(tmp_path, resolve=door.resolve) as browser:
        page = browser.page()
        first = "/flows/run-1?tab=logs"
        page.goto(door.url(first))
        _on_sign_in_page(page, door, first)
        # Both ways in: the provider's button, and the form for the htpasswd users the Secret holds.
        assert page.locator("form input[name=password]").count() == 1
        page.click("a#oidc")
        page.wait_for_url(re.compile(re.escape(door.provider.issuer) + r"/interaction/.*"))
        page.fill("input[name=login]", "alice")
        page.click("form [type=submit]")
        page.wait_for_url(door.url(first))
        assert page.inner_text("#path") == first
        assert page.inner_text("#user") == "alice@example.com"
        cookies = {c["name"]: c for c in browser.cookies()}
        assert f"{COOKIE}-oidc" not in cookies  # the flow cookie is used up
        session = cookies[COOKIE]
        assert (session["secure"], session["httpOnly"], session["sameSite"]) == (True, True, "Lax")


@pytest.mark.parametrize(("account", "status"), [("dave", 200), ("bob", 403)])
def test_group_and_domain_rules_admit_one_person_and_refuse_another(
    door: Door, tmp_path: Path, account: str, status: int
) -> None:
    # alice passes by group ops (test above); dave by his verified @example.com address; bob has neither.
    with Browser(tmp_path, resolve=door.resolve) as browser:
        page = browser.page()
        _to_provider(page, door, "/deployments")
        page.fill("input[name=login]", account)
        with page.expect_response(lambda r: urlsplit(r.url).path == "/deployments") as landed:
            page.click("form [type=submit]")
        assert landed.value.status == status


def test_a_tampered_id_token_gets_the_page_to_sign_in_again(door: Door, tmp_path: Path) -> None:
    door.provider.tamper(True)
    try:
        with Browser(tmp_path, resolve=door.resolve) as browser:
            page = browser.page()
            _to_provider(page, door, "/flows")
            page.fill("input[name=login]", "bob")  # the altered token claims mallory, in group ops
            with page.expect_response(lambda r: urlsplit(r.url).path == "/authgate/oidc/callback") as back:
                page.click("form [type=submit]")
            assert back.value.status == 401
            page.wait_for_selector("a#again")
            assert not [c for c in browser.cookies() if c["name"] == COOKIE]
    finally:
        door.provider.tamper(False)


def _someone_elses_callback(door: Door, account: str) -> str:
    """A callback URL of another sign-in (its own code and state), as an attacker who signed in at the provider
    would get it and plant in a victim's browser (login CSRF)."""
    netloc = urlsplit(door.origin).netloc
    base = door.origin.replace(urlsplit(door.origin).hostname or "", "127.0.0.1", 1)
    with httpx.Client(verify=False, timeout=10) as client:  # the test's own self-signed certificate
        started = client.get(base + "/authgate/oidc/start", params={"rd": "/"}, headers={"Host": netloc})
    assert started.status_code == 303, started.text
    return door.provider.sign_in(started.headers["location"], account)


def test_a_wrong_state_gets_the_page_to_sign_in_again(door: Door, tmp_path: Path) -> None:
    planted = _someone_elses_callback(door, "bob")
    assert planted.startswith(door.origin + "/authgate/oidc/callback?")
    with Browser(tmp_path, resolve=door.resolve) as browser:
        page = browser.page()
        _to_provider(page, door, "/flows")  # the victim's own sign-in, begun: its flow cookie is set
        answer = page.goto(planted)  # ... and another's callback, whose state is not the victim's
        assert answer is not None and answer.status == 400
        assert "does not match" in page.content()
        assert not [c for c in browser.cookies() if c["name"] == COOKIE]
        page.click("a#again")  # the offer to sign in again: the sign-in page, with the provider's button
        _on_sign_in_page(page, door, "/")


def test_sign_out_reaches_the_providers_end_session_and_the_next_navigation_signs_in(
    door: Door, tmp_path: Path
) -> None:
    with Browser(tmp_path, resolve=door.resolve) as browser:
        page = _signed_in(door, browser, "alice", "/flows")
        page.goto(door.url("/authgate/sign_out"))
        page.click("form [type=submit]")
        page.wait_for_url(re.compile(re.escape(door.provider.issuer) + r"/session/end.*"))
        query = parse_qs(urlsplit(page.url).query)
        assert query.get("client_id") == [CLIENT_ID]
        assert query.get("post_logout_redirect_uri") == [door.url("/authgate/sign_in")]
        assert not [c for c in browser.cookies() if c["name"] == COOKIE]
        # The provider's own confirmation, then back to authgate's sign-in page.
        page.click("button[name=logout][value=yes]")
        page.wait_for_url(re.compile(re.escape(door.url("/authgate/sign_in")) + ".*"))
        page.goto(door.url("/flows"))
        _on_sign_in_page(page, door, "/flows")
