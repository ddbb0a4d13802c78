"""The browser wire's OpenID pages in-process (app.browser with app.oidc_client, the provider played by the test):
the sign-in page's button, ``oidc/start``'s redirect and flow cookie, every refusal of ``oidc/callback`` as a page
offering to sign in again (never a 500), a session that passes the decision endpoint, and sign-out at the
provider."""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app import browser, oidc_client
from app.policy import parse_policy
from app.service import create_app
from app.settings import Settings
from app.state import AppState, build_state
from tests.support.jose import SigningKey, jwks

pytestmark = pytest.mark.anyio
ISSUER = "https://id.example.com"
KEY = SigningKey.rsa("k1")
KEYS = base64.urlsafe_b64encode(b"K" * 32).decode()
SESSION, FLOW, CSRF = "__Host-authgate", "__Host-authgate-oidc", "__Host-authgate-csrf"
HOST = "prefect.example.com"
POLICY = {
    "routes": {
        "ui": {"schemes": ["session"], "realm": "prefect"},
        "ops": {"schemes": ["session"], "principals": ["group:ops"]},
    },
    "sign_in": {"oidc": {"issuer": ISSUER, "client_id": "authgate", "display_name": "Example SSO"}},
}
DISCOVERY = {
    "issuer": ISSUER,
    "authorization_endpoint": f"{ISSUER}/authorize",
    "token_endpoint": f"{ISSUER}/token",
    "jwks_uri": f"{ISSUER}/jwks",
    "end_session_endpoint": f"{ISSUER}/logout",
}


class Provider:
    """What the provider answers: discovery and keys, and the token endpoint's next answer."""

    def __init__(self) -> None:
        self.up = True
        self.answer: tuple[int, dict[str, Any]] | None = None
        self.posted: list[dict[str, str]] = []

    def fetch(self, url: str, _issuer: Any) -> bytes:
        if not self.up:
            raise OSError("connection refused")
        return {
            f"{ISSUER}/.well-known/openid-configuration": json.dumps(DISCOVERY).encode(),
            f"{ISSUER}/jwks": jwks(KEY),
        }[url]

    def post(self, url: str, form: dict[str, str], headers: dict[str, str], _settings: Any) -> Any:
        self.posted.append(form)
        assert self.answer is not None
        return oidc_client._Response(self.answer[0], json.dumps(self.answer[1]).encode())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Provider:
    played = Provider()
    monkeypatch.setattr(
        browser, "OidcClient", lambda settings: oidc_client.OidcClient(settings, played.fetch, played.post)
    )
    return played


def make_state(tmp_path: Any, htpasswd: str = "", client_secret: bool = True) -> AppState:
    state = build_state(Settings(secret_dir=tmp_path / "absent"), policy=parse_policy(POLICY, "test"))
    files = {"session-keys": KEYS.encode()}
    if client_secret:
        files["oidc-client-secret"] = b"s3cret\n"
    if htpasswd:
        files["htpasswd"] = htpasswd.encode()
    assert state.reloader.apply(files, "test")
    return state


def cookies(answer: Any) -> dict[str, str]:
    return {line.split("=", 1)[0]: line for line in answer.headers.get_list("set-cookie")}


def value(line: str) -> str:
    return line.split(";", 1)[0].split("=", 1)[1]


async def start(client: Any, **headers: str) -> tuple[dict[str, str], str]:
    answer = await client.get(
        "/authgate/oidc/start",
        params={"rd": "/flows?x=1"},
        headers={"host": HOST, "x-forwarded-proto": "https", **headers},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(answer.headers["location"]).query))
    return query, value(cookies(answer)[FLOW])


def id_token(nonce: str, **extra: Any) -> str:
    claims = {
        "iss": ISSUER,
        "aud": "authgate",
        "sub": "u-1",
        "exp": 4_000_000_000,
        "iat": 1_000_000_000,
        "nonce": nonce,
        "email": "alice@example.com",
        "email_verified": True,
        "groups": ["ops"],
        **extra,
    }
    return KEY.sign(claims)


async def callback(client: Any, query: dict[str, str], flow: str | None) -> Any:
    headers = {"host": HOST}
    if flow is not None:
        headers["cookie"] = f"{FLOW}={flow}"
    return await client.get("/authgate/oidc/callback", params=query, headers=headers, follow_redirects=False)


async def test_the_page_offers_the_provider_and_the_form_only_with_htpasswd_users(
    tmp_path: Any, provider: Provider
) -> None:
    for htpasswd, form in (("", False), ("carol:{SHA}x\n", True)):
        state = make_state(tmp_path, htpasswd)
        async with AsyncTestClient(create_app(state.settings, state)) as client:
            page = await client.get("/authgate/sign_in", params={"rd": "/flows"})
        assert page.status_code == 200
        assert 'href="/authgate/oidc/start?rd=%2Fflows"' in page.text and "Sign in with Example SSO" in page.text
        assert ('name="password"' in page.text) is form


async def test_a_whole_sign_in_then_decisions_then_sign_out_at_the_provider(tmp_path: Any, provider: Provider) -> None:
    state = make_state(tmp_path)
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        query, flow = await start(client)
        assert query["redirect_uri"] == f"https://{HOST}/authgate/oidc/callback"
        assert query["code_challenge_method"] == "S256"
        provider.answer = (200, {"id_token": id_token(query["nonce"]), "token_type": "Bearer", "access_token": "a"})
        done = await callback(client, {"code": "c0de", "state": query["state"], "iss": ISSUER}, flow)
        assert done.status_code == 303 and done.headers["location"] == "/flows?x=1"
        assert provider.posted[0]["code"] == "c0de" and len(provider.posted[0]["code_verifier"]) == 43
        assert "max-age=0" in cookies(done)[FLOW].lower()
        session = value(cookies(done)[SESSION])
        nginx = {
            "x-original-url": f"https://{HOST}/flows",
            "x-original-method": "GET",
            "cookie": f"{SESSION}={session}",
        }
        for route in ("ui", "ops"):
            allowed = await client.get(f"/auth/{route}", headers=nginx)
            assert (allowed.status_code, allowed.headers["x-auth-request-user"]) == (200, "alice@example.com")

        page = await client.get("/authgate/sign_in", headers={"host": HOST})
        assert f"form-action 'self' {ISSUER}" in page.headers["content-security-policy"]
        csrf = value(cookies(page)[CSRF])
        out = await client.post(
            "/authgate/sign_out",
            data={"csrf": csrf},
            headers={"host": HOST, "sec-fetch-site": "same-origin", "cookie": f"{SESSION}={session}; {CSRF}={csrf}"},
            follow_redirects=False,
        )
        assert out.status_code == 303
        assert out.headers["location"] == (
            f"{ISSUER}/logout?client_id=authgate&post_logout_redirect_uri=https%3A%2F%2F{HOST}%2Fauthgate%2Fsign_in"
        )
    assert state.metrics.oidc_sign_ins.labels(result="signed_in")._value.get() == 1


@pytest.mark.parametrize(
    ("port", "origin"),
    [("8443", f"https://{HOST}:8443"), ("443", f"https://{HOST}"), ("x", f"https://{HOST}")],
)
async def test_the_redirect_uri_keeps_a_non_default_forwarded_port(
    tmp_path: Any, provider: Provider, port: str, origin: str
) -> None:
    state = make_state(tmp_path)
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        query, _ = await start(client, **{"x-forwarded-port": port})
    assert query["redirect_uri"] == f"{origin}/authgate/oidc/callback"


async def test_every_refusal_is_a_page_to_sign_in_again_never_a_500(tmp_path: Any, provider: Provider) -> None:
    state = make_state(tmp_path)
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        query, flow = await start(client)
        good = {"code": "c0de", "state": query["state"]}
        provider.answer = (200, {"id_token": id_token(query["nonce"])})
        cases = [
            (good, None, 400, "flow_missing"),
            (good, flow[:-3] + "AAA", 400, "flow_invalid"),
            ({**good, "state": "A" * 43}, flow, 400, "bad_state"),
            ({"code": "c0de"}, flow, 400, "bad_state"),
            ({**good, "iss": "https://evil.example"}, flow, 400, "wrong_issuer"),
            ({"state": query["state"], "error": "access_denied"}, flow, 401, "provider_refused"),
            ({"state": query["state"]}, flow, 401, "provider_refused"),
        ]
        for params, flow_cookie, status, result in cases:
            answer = await callback(client, params, flow_cookie)
            assert answer.status_code == status, (params, answer.text)
            assert 'id="again"' in answer.text and SESSION not in cookies(answer)
            assert state.metrics.oidc_sign_ins.labels(result=result)._value.get() >= 1, result
        for answer_of_provider, reason in (
            ((400, {"error": "invalid_grant"}), "code_refused"),
            ((200, {"id_token": id_token("another nonce")}), "id_token_nonce"),
            ((200, {"id_token": id_token(query["nonce"], email_verified=False)}), "email_unverified"),
            ((200, {"no": "id_token"}), "id_token_missing"),
            ((502, {}), "provider_error"),
        ):
            provider.answer = answer_of_provider
            answer = await callback(client, good, flow)
            assert answer.status_code == 401 and 'id="again"' in answer.text, reason
            assert state.metrics.oidc_sign_ins.labels(result=reason)._value.get() == 1, reason


async def test_start_answers_503_without_a_client_secret_or_a_reachable_provider(
    tmp_path: Any, provider: Provider
) -> None:
    state = make_state(tmp_path, "carol:{SHA}x\n", client_secret=False)
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        answer = await client.get("/authgate/oidc/start", headers={"host": HOST}, follow_redirects=False)
    assert answer.status_code == 503 and "not set up" in answer.text
    provider.up = False
    state = make_state(tmp_path)
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        answer = await client.get("/authgate/oidc/start", headers={"host": HOST}, follow_redirects=False)
        assert answer.status_code == 503 and "cannot be reached" in answer.text
        assert (await client.get("/readyz")).status_code == 200


async def test_rd_is_checked_at_the_start(tmp_path: Any, provider: Provider) -> None:
    state = make_state(tmp_path)
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        answer = await client.get(
            "/authgate/oidc/start", params={"rd": "//evil.example/x"}, headers={"host": HOST}, follow_redirects=False
        )
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(answer.headers["location"]).query))
        provider.answer = (200, {"id_token": id_token(query["nonce"])})
        flow = value(cookies(answer)[FLOW])
        done = await callback(client, {"code": "c", "state": query["state"]}, flow)
    assert done.status_code == 303 and done.headers["location"] == "/"
    assert not re.search(r"evil", done.headers["location"])
