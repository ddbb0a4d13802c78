"""Sign-in with an OpenID provider, a real ``authgate serve`` against a real one (npm ``oidc-provider``,
tests/oidc/people.mjs), driven over plain HTTP the way a browser goes: authgate's ``oidc/start`` -> the
provider's login -> authgate's ``oidc/callback`` -> a session, then decisions on it (ingress-nginx's auth
subrequests). Group and e-mail domain rules, an unverified address, a wrong ``state``, a replayed code, a
tampered ID token, sign-out at the provider, and a provider that cannot be reached."""

from __future__ import annotations

import base64
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.kubelet import KubeletSecretDir
from tests.support.oidc_people import CLIENT_SECRET, PeopleProvider
from tests.support.procs import AuthgateProcess, free_port, metric_value

# One provider and one authgate for the module: its tests run on one worker.
pytestmark = pytest.mark.xdist_group("oidc-sign-in")

HOST = "prefect.example.com"
COOKIE, FLOW = "__Host-authgate", "__Host-authgate-oidc"
SESSION_KEY = base64.urlsafe_b64encode(b"k" * 32).decode()


def policy(issuer: str) -> str:
    return f"""
routes:
  ui: {{schemes: [session], realm: prefect}}
  ops: {{schemes: [session], realm: ops, principals: ["group:ops"]}}
  corp: {{schemes: [session], realm: corp, principals: ["domain:example.com"]}}
sign_in:
  oidc:
    issuer: {issuer}
    client_id: authgate
    display_name: Test provider
"""


@dataclass
class Stack:
    provider: PeopleProvider
    authgate: AuthgateProcess

    def start(self, rd: str = "/flows?tab=logs") -> tuple[httpx.Response, str]:
        answer = httpx.get(
            self.authgate.base_url + "/authgate/oidc/start",
            params={"rd": rd},
            headers={"Host": HOST, "X-Forwarded-Proto": "https"},
            timeout=10,
        )
        assert answer.status_code == 303, answer.text
        return answer, cookie(answer, FLOW)

    def callback(self, url: str, flow: str | None) -> httpx.Response:
        parts = urllib.parse.urlsplit(url)
        assert (parts.scheme, parts.netloc, parts.path) == ("https", HOST, "/authgate/oidc/callback"), url
        headers = {"Host": HOST, "X-Forwarded-Proto": "https"}
        if flow is not None:
            headers["Cookie"] = f"{FLOW}={flow}"
        return httpx.get(f"{self.authgate.base_url}{parts.path}?{parts.query}", headers=headers, timeout=15)

    def sign_in(self, account: str, rd: str = "/flows?tab=logs") -> httpx.Response:
        started, flow = self.start(rd)
        return self.callback(self.provider.sign_in(started.headers["location"], account), flow)

    def decide(self, route: str, session: str, path: str = "/flows") -> httpx.Response:
        return httpx.get(
            f"{self.authgate.base_url}/auth/{route}",
            headers={
                "X-Original-URL": f"https://{HOST}{path}",
                "X-Original-Method": "GET",
                "Cookie": f"{COOKIE}={session}",
                "Accept": "text/html",
            },
            timeout=5,
        )


def cookie(answer: httpx.Response, name: str) -> str:
    for line in answer.headers.get_list("set-cookie"):
        if line.startswith(name + "="):
            return line.split(";", 1)[0].split("=", 1)[1]
    raise AssertionError(f"no {name} cookie in {answer.headers.get_list('set-cookie')}")


def set_cookie_line(answer: httpx.Response, name: str) -> str:
    [line] = [line for line in answer.headers.get_list("set-cookie") if line.startswith(name + "=")]
    return line


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("oidc-sign-in")
    with PeopleProvider(workdir / "provider") as provider:
        secret = KubeletSecretDir(workdir / "secret")
        # No htpasswd, no tokens: people sign in only through the provider.
        secret.write({"session-keys": SESSION_KEY + "\n", "oidc-client-secret": CLIENT_SECRET + "\n"})
        config = workdir / "policy.yaml"
        config.write_text(policy(provider.issuer))
        authgate = AuthgateProcess(secret.path, workdir / "authgate.log", config=config, proxy="ingress-nginx")
        try:
            authgate.wait_ready()
            yield Stack(provider, authgate)
        finally:
            authgate.stop()


def test_a_person_signs_in_with_the_provider_and_reaches_the_page_first_asked(stack: Stack) -> None:
    started, flow = stack.start("/flows?tab=logs")
    location = urllib.parse.urlsplit(started.headers["location"])
    query = dict(urllib.parse.parse_qsl(location.query))
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{stack.provider.issuer}/auth"
    assert query["response_type"] == "code" and query["client_id"] == "authgate"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["redirect_uri"] == f"https://{HOST}/authgate/oidc/callback"
    assert query["scope"] == "openid email profile"
    assert len(query["state"]) == 43 and len(query["nonce"]) == 43 and query["state"] != query["nonce"]
    line = set_cookie_line(started, FLOW)
    for attribute in ("Max-Age=600", "Path=/", "Secure", "HttpOnly", "SameSite=Lax"):
        assert attribute.lower() in line.lower(), line
    assert "domain=" not in line.lower()

    back = stack.provider.sign_in(started.headers["location"], "alice")
    answer = stack.callback(back, flow)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/flows?tab=logs"
    assert set_cookie_line(answer, FLOW).lower().count("max-age=0") == 1  # the flow is used up
    session = cookie(answer, COOKIE)
    allowed = stack.decide("ui", session)
    assert allowed.status_code == 200
    assert allowed.headers["x-auth-request-user"] == "alice@example.com"
    assert allowed.headers["x-auth-request-scheme"] == "session"
    who = httpx.get(
        stack.authgate.base_url + "/authgate/userinfo", headers={"Cookie": f"{COOKIE}={session}"}, timeout=5
    ).json()
    assert (who["user"], who["via"], who["groups"], who["email"]) == (
        "alice@example.com",
        "oidc",
        ["ops"],
        "alice@example.com",
    )
    # Nothing of the exchange reaches the log: no code, state, nonce or cookie.
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(back).query))["code"]
    output = stack.authgate.output()
    for secret in (code, query["state"], query["nonce"], flow, session, CLIENT_SECRET):
        assert secret not in output


@pytest.mark.parametrize(
    ("account", "ops", "corp"),
    [
        ("alice", 200, 200),  # in group ops, alice@example.com
        ("dave", 403, 200),  # no group ops, dave@example.com
        ("bob", 403, 403),  # group staff only, bob@elsewhere.example
    ],
)
def test_group_and_domain_rules(stack: Stack, account: str, ops: int, corp: int) -> None:
    answer = stack.sign_in(account)
    assert answer.status_code == 303, answer.text
    session = cookie(answer, COOKIE)
    assert stack.decide("ui", session).status_code == 200
    assert stack.decide("ops", session).status_code == ops
    assert stack.decide("corp", session).status_code == corp


def test_an_unverified_email_is_refused_with_a_page_to_sign_in_again(stack: Stack) -> None:
    answer = stack.sign_in("carol")  # carol@example.com, email_verified false, group ops
    assert answer.status_code == 401
    assert "not verified" in answer.text
    assert 'href="/authgate/sign_in?rd=%2Fflows%3Ftab%3Dlogs"' in answer.text
    assert all(not line.startswith(COOKIE + "=") for line in answer.headers.get_list("set-cookie"))


def test_a_wrong_state_or_no_flow_cookie_is_refused_with_a_page_to_sign_in_again(stack: Stack) -> None:
    started, flow = stack.start()
    back = stack.provider.sign_in(started.headers["location"], "alice")
    wrong = re.sub(r"state=[^&]+", "state=" + "A" * 43, back)
    for url, flow_cookie in ((wrong, flow), (back, None)):
        answer = stack.callback(url, flow_cookie)
        assert answer.status_code == 400
        assert 'id="again"' in answer.text and "Sign in again" in answer.text
        assert all(not line.startswith(COOKIE + "=") for line in answer.headers.get_list("set-cookie"))
    before = metric_value(stack.authgate.base_url, 'authgate_oidc_sign_ins_total{result="bad_state"}')
    assert before >= 1


def test_a_replayed_code_is_refused_by_the_provider_and_gets_the_page(stack: Stack) -> None:
    started, flow = stack.start()
    back = stack.provider.sign_in(started.headers["location"], "alice")
    assert stack.callback(back, flow).status_code == 303
    replayed = stack.callback(back, flow)  # the same code again, with the flow cookie kept aside
    assert replayed.status_code == 401
    assert "already used" in replayed.text and "Sign in again" in replayed.text


def test_a_tampered_id_token_is_refused(stack: Stack) -> None:
    stack.provider.tamper(True)
    try:
        answer = stack.sign_in("bob")  # the provider's answer then claims mallory, in group ops
    finally:
        stack.provider.tamper(False)
    assert answer.status_code == 401
    assert "Sign in again" in answer.text
    assert metric_value(stack.authgate.base_url, 'authgate_oidc_sign_ins_total{result="id_token_signature"}') >= 1


def test_sign_out_ends_the_session_and_sends_the_browser_to_the_provider(stack: Stack) -> None:
    session = cookie(stack.sign_in("alice"), COOKIE)
    page = httpx.get(
        stack.authgate.base_url + "/authgate/sign_in",
        headers={"Host": HOST, "Cookie": f"{COOKIE}={session}"},
        timeout=5,
    )
    assert "Sign in with Test provider" in page.text
    assert 'name="password"' not in page.text  # no htpasswd users: no password form
    csrf = cookie(page, f"{COOKIE}-csrf")
    out = httpx.post(
        stack.authgate.base_url + "/authgate/sign_out",
        headers={
            "Host": HOST,
            "X-Forwarded-Proto": "https",
            "Sec-Fetch-Site": "same-origin",
            "Cookie": f"{COOKIE}={session}; {COOKIE}-csrf={csrf}",
        },
        data={"csrf": csrf},
        timeout=5,
    )
    assert out.status_code == 303
    target = urllib.parse.urlsplit(out.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{stack.provider.issuer}/session/end"
    assert dict(urllib.parse.parse_qsl(target.query)) == {
        "client_id": "authgate",
        "post_logout_redirect_uri": f"https://{HOST}/authgate/sign_in",
    }
    assert "max-age=0" in set_cookie_line(out, COOKIE).lower()
    # The provider takes it: its sign-out page (a confirmation form), not an error.
    assert httpx.get(out.headers["location"], timeout=5).status_code == 200


def test_an_unreachable_provider_keeps_authgate_ready_and_the_start_answers_503(tmp_path: Path) -> None:
    secret = KubeletSecretDir(tmp_path / "secret")
    secret.write({"session-keys": SESSION_KEY + "\n", "oidc-client-secret": CLIENT_SECRET + "\n"})
    config = tmp_path / "policy.yaml"
    config.write_text(policy(f"http://127.0.0.1:{free_port()}"))  # nothing listens there
    authgate = AuthgateProcess(secret.path, tmp_path / "authgate.log", config=config, proxy="ingress-nginx")
    try:
        authgate.wait_ready()  # ready: machines' credentials and existing sessions do not need the provider
        answer = httpx.get(
            authgate.base_url + "/authgate/oidc/start", params={"rd": "/flows"}, headers={"Host": HOST}, timeout=10
        )
        assert answer.status_code == 503
        assert "cannot be reached" in answer.text and "Sign in again" in answer.text
    finally:
        authgate.stop()
