"""The browser wire (app.browser) in-process: the sign-in and sign-out forms, their CSRF checks, their throttle,
every answer to bad input, and a session they issue passing the decision endpoint."""

from __future__ import annotations

import base64
import hashlib
import logging
import re

import anyio
import bcrypt
import pytest
from litestar.testing import AsyncTestClient

from app.policy import parse_policy
from app.service import create_app
from app.settings import Settings
from app.state import AppState, build_state

pytestmark = pytest.mark.anyio
KEYS = base64.urlsafe_b64encode(b"K" * 32).decode()
ALICE_PW = "alice-correct-horse"
BCRYPT = bcrypt.hashpw(ALICE_PW.encode(), bcrypt.gensalt(4)).decode()
CAROL_PW = "carol-battery-staple"
CAROL = f"carol:{{SHA}}{base64.b64encode(hashlib.sha1(CAROL_PW.encode()).digest()).decode()}"
SESSION, CSRF = "__Host-authgate", "__Host-authgate-csrf"
HOST = "testserver.local"
SAME = {"sec-fetch-site": "same-origin", "content-type": "application/x-www-form-urlencoded"}
POLICY = {
    "routes": {"ui": {"schemes": ["session", "basic"], "realm": "prefect"}, "api": {"schemes": ["bearer"]}},
    "sign_in": {"lifetime": "1h", "idle_timeout": "30m"},
    "throttle": {"max_failures_per_user": 3, "max_failures_per_address": 50},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_state(tmp_path, policy=POLICY) -> AppState:
    return build_state(Settings(secret_dir=tmp_path / "absent"), policy=parse_policy(policy, "test"))


def load(state: AppState) -> None:
    files = {"htpasswd": f"alice:{BCRYPT}\n{CAROL}\n".encode(), "session-keys": KEYS.encode()}
    assert state.reloader.apply(files, "test")


@pytest.fixture
def state(tmp_path) -> AppState:
    state = make_state(tmp_path)
    load(state)
    return state


def set_cookies(answer) -> dict[str, str]:
    """name -> the whole Set-Cookie line."""
    return {line.split("=", 1)[0]: line for line in answer.headers.get_list("set-cookie")}


def cookie_value(line: str) -> str:
    return line.split(";", 1)[0].split("=", 1)[1]


async def form_token(client, rd: str = "/") -> str:
    page = await client.get("/authgate/sign_in", params={"rd": rd})
    assert page.status_code == 200
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert cookie_value(set_cookies(page)[CSRF]) == token
    return token


async def sign_in(client, user="alice", password=ALICE_PW, rd="/ui/flows?x=1", headers=SAME, token=None, body=None):
    token = token if token is not None else await form_token(client)
    data = body if body is not None else {"csrf": token, "username": user, "password": password, "rd": rd}
    return await client.post(
        "/authgate/sign_in",
        content=data if isinstance(data, bytes) else None,
        data=None if isinstance(data, bytes) else data,
        headers={**headers, "cookie": f"{CSRF}={token}"},
        follow_redirects=False,
    )


def ingress(cookie: str | None, method: str = "GET", **extra: str) -> dict[str, str]:
    headers = {"x-original-url": "https://prefect.example.com/ui/flows", "x-original-method": method, **extra}
    if cookie is not None:
        headers["cookie"] = f"{SESSION}={cookie}"
    return headers


async def test_no_session_route_no_pages(tmp_path):
    state = make_state(tmp_path, {"routes": {"api": {}}})
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        for method in ("GET", "POST"):
            answer = await client.request(method, "/authgate/sign_in")
            assert answer.status_code != 200 and "<form" not in answer.text and not set_cookies(answer)


async def test_the_default_title_is_the_realm_of_the_route_offering_the_session_first(tmp_path):
    """As the chart renders it: the API route takes the session last and sorts first; the page is the UI's."""
    routes = {
        "api": {"schemes": ["bearer", "basic", "session"], "realm": "prefect-api"},
        "ui": {"schemes": ["session", "basic"], "realm": "prefect"},
    }
    state = make_state(tmp_path, {"routes": routes, "sign_in": {}})
    load(state)
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        page = await client.get("/authgate/sign_in")
    assert "<title>prefect</title>" in page.text
    only_last = {"api": routes["api"]}
    state = make_state(tmp_path, {"routes": only_last, "sign_in": {}})
    load(state)
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        page = await client.get("/authgate/sign_in")
    assert "<title>prefect-api</title>" in page.text  # no route offers it first: any session route's realm


async def test_the_form_page(state):
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        page = await client.get("/authgate/sign_in", params={"rd": '"><script>alert(1)</script>'})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script>" not in page.text and "&quot;&gt;&lt;script&gt;" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "form-action 'self'" in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "<title>prefect</title>" in page.text  # no sign_in.title: the session route's realm
    for field in ('name="username"', 'name="password"', 'name="csrf"', 'name="rd"', 'method="post"'):
        assert field in page.text
    csrf = set_cookies(page)[CSRF]
    for attribute in ("path=/", "secure", "httponly", "samesite=strict"):
        assert attribute in csrf.lower()
    assert "Domain" not in csrf


async def test_sign_in_then_the_session_passes_then_sign_out(state, caplog):
    caplog.set_level(logging.DEBUG)
    app = create_app(state.settings, state)
    async with AsyncTestClient(app) as client:
        answer = await sign_in(client)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/flows?x=1"
        line = set_cookies(answer)[SESSION]
        for attribute in ("path=/", "secure", "httponly", "samesite=lax", "max-age=3600"):
            assert attribute in line.lower()
        info = await client.get("/authgate/userinfo", headers={"cookie": line.split(";", 1)[0]})
        assert info.status_code == 200
        assert info.json() == {"user": "alice", "via": "form", "expires": info.json()["expires"]}
        assert info.json()["expires"].endswith("Z")
        assert (await client.get("/authgate/userinfo")).json() == {"error": "not signed in"}
        assert (await client.get("/authgate/userinfo", headers={"cookie": f"{SESSION}=forged"})).status_code == 401
        assert "Domain" not in line
        session = cookie_value(line)
        allowed = await client.get("/auth/ui", headers=ingress(session, **{"sec-fetch-mode": "navigate"}))
        assert allowed.status_code == 200
        assert (allowed.headers["x-auth-request-user"], allowed.headers["x-auth-request-scheme"]) == (
            "alice",
            "session",
        )
        assert allowed.headers["cache-control"] == "no-store"
        # the session is not a credential on a route without session
        assert (await client.get("/auth/api", headers=ingress(session))).status_code == 401
        token = await form_token(client)
        out = await client.post(
            "/authgate/sign_out",
            data={"csrf": token},
            headers={**SAME, "cookie": f"{CSRF}={token}; {SESSION}={session}"},
            follow_redirects=False,
        )
        assert out.status_code == 303 and out.headers["location"] == "/authgate/sign_in"
        cleared = set_cookies(out)[SESSION]
        assert cookie_value(cleared) in ("", '""') and "Max-Age=0" in cleared
    registry = state.metrics.registry
    assert registry.get_sample_value("authgate_sign_ins_total", {"result": "signed_in"}) == 1
    assert registry.get_sample_value("authgate_sign_ins_total", {"result": "signed_out"}) == 1
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert ALICE_PW not in text and session not in text and token not in text


async def test_through_ingress_nginx_a_page_load_without_a_session_gets_the_401_it_redirects(state):
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        nav = await client.get("/auth/ui", headers=ingress(None, **{"sec-fetch-mode": "navigate"}))
        assert nav.status_code == 401 and "location" not in nav.headers
        script = await client.get("/auth/ui", headers=ingress(None))
        assert script.status_code == 401 and script.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    ("headers", "cookie_token", "form_token_value"),
    [
        (SAME, None, "t" * 43),  # no cookie
        (SAME, "a" * 43, "b" * 43),  # cookie and form differ
        (SAME, "a" * 43, ""),  # no form token
        ({**SAME, "sec-fetch-site": "cross-site"}, "a" * 43, "a" * 43),
        ({**SAME, "sec-fetch-site": "same-site"}, "a" * 43, "a" * 43),
        ({"content-type": SAME["content-type"], "origin": "https://evil.example"}, "a" * 43, "a" * 43),
        ({"content-type": SAME["content-type"], "origin": "null"}, "a" * 43, "a" * 43),
    ],
    ids=["no-cookie", "mismatch", "no-field", "cross-site", "same-site", "other-origin", "null-origin"],
)
async def test_csrf_checks_refuse_sign_in_and_sign_out(state, headers, cookie_token, form_token_value):
    cookie = f"{CSRF}={cookie_token}" if cookie_token else ""
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        data = {"csrf": form_token_value, "username": "alice", "password": ALICE_PW, "rd": "/"}
        answer = await client.post("/authgate/sign_in", data=data, headers={**headers, "cookie": cookie})
        assert answer.status_code == 401
        assert SESSION not in set_cookies(answer)
        assert "Sign-in failed." in answer.text
        out = await client.post("/authgate/sign_out", data=data, headers={**headers, "cookie": cookie})
        assert out.status_code == 403 and SESSION not in set_cookies(out)


async def test_same_origin_by_origin_header_when_no_fetch_metadata(state):
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        headers = {"content-type": SAME["content-type"], "origin": f"http://{HOST}"}
        assert (await sign_in(client, headers=headers)).status_code == 303


async def test_wrong_password_and_unknown_user_look_alike_then_the_name_is_throttled(state):
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        wrong = await sign_in(client, password="wrong")
        unknown = await sign_in(client, user="mallory", password="wrong")
        assert wrong.status_code == unknown.status_code == 401
        assert "Sign-in failed." in wrong.text and "Sign-in failed." in unknown.text
        assert SESSION not in set_cookies(wrong)
        for _ in range(2):
            await sign_in(client, password="wrong")
        throttled = await sign_in(client)  # alice's bcrypt hash is not checked under a name ban
        assert throttled.status_code == 401 and "Sign-in failed." in throttled.text
        assert SESSION not in set_cookies(throttled)
        # {SHA} is cheap enough to check under a ban: its owner is never locked out (as with Basic)
        for _ in range(3):
            await sign_in(client, user="carol", password="wrong")
        assert (await sign_in(client, user="carol", password=CAROL_PW)).status_code == 303
    assert state.metrics.registry.get_sample_value("authgate_sign_ins_total", {"result": "throttled"}) == 1


async def test_the_form_and_basic_share_one_throttle(state):
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        for _ in range(3):
            await sign_in(client, password="wrong")
        basic = "Basic " + base64.b64encode(f"alice:{ALICE_PW}".encode()).decode()
        answer = await client.get("/auth/ui", headers={**ingress(None), "authorization": basic})
        assert (answer.status_code, answer.text) == (403, "")


@pytest.mark.parametrize(
    ("rd", "location"),
    [
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("https://evil.example/", "/"),
        (f"https://{HOST}/ui", "/"),  # only a path, even to this host
        ("/ui", "/ui"),
        ("/\u20ac", "/"),
    ],
)
async def test_rd_through_the_form(state, rd, location):
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        answer = await sign_in(client, rd=rd)
    assert (answer.status_code, answer.headers["location"]) == (303, location)


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("text/plain", b"username=alice&password=x", 401),
        ("application/json", b'{"username": "alice"}', 401),
        (SAME["content-type"], b"csrf=TOKEN&username=%FF%FE&password=x", 401),  # not UTF-8
        (SAME["content-type"], b"csrf=TOKEN&password=x", 401),  # no user name
        (SAME["content-type"], b"csrf=TOKEN&username=al%00ice&password=x", 401),
        (SAME["content-type"], b"csrf=TOKEN&username=alice&password=" + b"x" * 2000, 401),
        (SAME["content-type"], b"csrf=TOKEN&" + b"&".join(b"f%d=1" % i for i in range(20)), 401),
        (SAME["content-type"], b"csrf=TOKEN&username=alice&password=" + b"x" * 9000, 413),
    ],
    ids=["text", "json", "not-utf8", "no-name", "nul", "long-password", "many-fields", "too-big"],
)
async def test_bad_input_gets_a_clear_answer_never_a_500(state, content_type, body, status):
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        token = await form_token(client)
        answer = await client.post(
            "/authgate/sign_in",
            content=body.replace(b"TOKEN", token.encode()),
            headers={"content-type": content_type, "sec-fetch-site": "same-origin", "cookie": f"{CSRF}={token}"},
        )
    assert answer.status_code == status
    assert SESSION not in set_cookies(answer)


async def test_not_ready_before_credentials(tmp_path):
    state = make_state(tmp_path)
    async with AsyncTestClient(create_app(state.settings, state)) as client:
        answer = await sign_in(client)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"


async def test_the_served_app_routes_the_pages_past_the_decision_endpoint(tmp_path):
    """What `authgate serve` runs (app.service.create_asgi): the raw decision endpoint in front, the pages
    behind it, a session they issue passing the fast lane's route."""
    from app.service import create_asgi

    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "htpasswd").write_text(f"alice:{BCRYPT}\n")
    (secret / "session-keys").write_text(KEYS + "\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text("routes: {ui: {schemes: [session, basic]}}\nsign_in: {}\n")
    served = create_asgi(Settings(secret_dir=secret, config=policy))
    async with AsyncTestClient(served) as client:  # type: ignore[arg-type]
        state = served.decider.state
        for _ in range(200):  # the credential source loads in the lifespan: wait for it, with a deadline
            if state.store.current is not None:
                break
            await anyio.sleep(0.05)
        assert state.store.current is not None
        answer = await sign_in(client)
        assert answer.status_code == 303
        session = cookie_value(set_cookies(answer)[SESSION])
        allowed = await client.get("/auth/ui", headers=ingress(session))
        assert (allowed.status_code, allowed.headers["x-auth-request-user"]) == (200, "alice")
