"""Decision caching at the proxy (ingress-nginx ``auth-cache-key`` / ``auth-cache-duration``) and its bound.

The controller caches auth answers with ``proxy_cache`` (default ``200 202 401 5m``), but honours the auth
answer's ``Cache-Control``. So authgate decides: ``decision_cache.max_age_seconds: 0`` answers allows with
``no-store`` (nothing cached, revocation as fast as a reload); ``N`` answers ``max-age=N``, so a cached allow
outlives a revocation by at most N seconds. Denials always carry ``no-store``: a cached 401 would otherwise
keep a newly added credential out for the whole 5 minutes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import HOST, Gateway, Upstream, bearer, sha256_hex, start_authgate, tokens_file
from tests.e2e.nginx import DEFAULT_AUTH_CACHE_DURATION, NginxProcess, prefect_ingresses
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import AuthgateProcess, wait_for

pytestmark = pytest.mark.e2e

TOKEN_A = "cache-token-a-0123456789abcdefgh"
READER = "cache-reader-0123456789abcdefghij"  # GET /api/flows only
TOKEN_B = "cache-token-b-fedcba9876543210hg"
LINE_A = f"sha256:{sha256_hex(TOKEN_A)}"
LINE_B = f"sha256:{sha256_hex(TOKEN_B)}"
CACHE_KEY = "$remote_user$http_authorization"  # the usual annotation value
MAX_AGE = 5
RELOAD_BOUND = 2.0


@dataclass
class CacheStack:
    gateway: Gateway
    authgate: AuthgateProcess
    secret: KubeletSecretDir

    def decisions(self) -> float:
        """Decisions authgate made so far (every subrequest that was not served from nginx's cache)."""
        text = httpx.get(self.authgate.base_url + "/metrics", timeout=5).text
        return sum(float(v) for v in re.findall(r"^authgate_decisions_total\{[^}]*\} (\S+)$", text, re.MULTILINE))

    def authgate_says(self, token: str) -> int:
        """authgate's own answer for GET /api/flows, asked directly (no proxy, no cache)."""
        headers = {
            **bearer(token),
            "X-Original-URL": f"http://{HOST}/api/flows",
            "X-Original-Method": "GET",
            "X-Real-IP": "127.0.0.2",
        }
        return httpx.get(self.authgate.base_url + "/auth/api", headers=headers, timeout=5).status_code

    def through_proxy(self, token: str) -> int:
        return self.gateway.request("GET", "/api/flows", bearer(token)).status


def _stack(tmp_path: Path, upstream: Upstream, max_age: int, tokens: str | None = None) -> Iterator[CacheStack]:
    authgate, secret = start_authgate(
        tmp_path / "authgate",
        proxy="ingress-nginx",
        max_age_seconds=max_age,
        tokens=tokens or tokens_file(a=LINE_A),
    )
    specs = prefect_ingresses(
        host=HOST,
        authgate_port=authgate.port,
        backend=upstream.address,
        auth_cache_key=CACHE_KEY,
        auth_cache_duration=DEFAULT_AUTH_CACHE_DURATION,
    )
    try:
        with NginxProcess(specs, tmp_path / "nginx") as nginx:
            yield CacheStack(Gateway("nginx", nginx.port, upstream), authgate, secret)
    finally:
        authgate.stop()


@pytest.fixture
def bounded_cache(tmp_path: Path, upstream: Upstream) -> Iterator[CacheStack]:
    yield from _stack(tmp_path, upstream, MAX_AGE)


@pytest.fixture
def no_cache(tmp_path: Path, upstream: Upstream) -> Iterator[CacheStack]:
    yield from _stack(tmp_path, upstream, 0)


def test_cached_allow_outlives_revocation_but_never_the_bound(bounded_cache: CacheStack) -> None:
    stack = bounded_cache
    answer = httpx.get(
        stack.authgate.base_url + "/auth/api",
        timeout=5,
        headers={**bearer(TOKEN_A), "X-Original-URL": f"http://{HOST}/api/flows", "X-Original-Method": "GET"},
    )
    assert answer.headers["Cache-Control"] == f"max-age={MAX_AGE}"

    filled = time.monotonic()
    assert stack.through_proxy(TOKEN_A) == 200  # fills nginx's cache
    filled_by = time.monotonic()  # nginx made the cached decision between ``filled`` and here
    before = stack.decisions()
    for _ in range(5):
        assert stack.through_proxy(TOKEN_A) == 200
    assert stack.decisions() == before, "nginx should have served these from its auth cache"

    stack.secret.write({"tokens": tokens_file(b=LINE_B)})  # revoke A
    wait_for(lambda: stack.authgate_says(TOKEN_A) == 401, timeout=RELOAD_BOUND + 3, what="authgate to revoke A")
    revoked = time.monotonic()
    # What caching does to revocation: authgate refuses A, the proxy still lets it in from its cache...
    assert revoked - filled < MAX_AGE - 0.5, "the reload was too slow to observe the cached window"
    assert stack.through_proxy(TOKEN_A) == 200
    # ...but never past max-age after the cached decision was made. nginx keeps time in whole seconds, so a
    # ``max-age=N`` entry is served until between N and N + 1 seconds after it was stored. What is held to
    # that bound is when each probe was *sent* (nginx read its clock after that), not when its answer came
    # back: a slow answer on a loaded machine says nothing about the cache.
    last_allowed_sent = revoked

    def refused() -> bool:
        nonlocal last_allowed_sent
        sent = time.monotonic()
        status = stack.through_proxy(TOKEN_A)
        if status == 200:
            last_allowed_sent = sent
        return status == 401

    wait_for(refused, timeout=MAX_AGE + 3, interval=0.05, what="the cached allow to expire")
    assert last_allowed_sent - filled_by <= MAX_AGE + 1.0, "nginx served the cached allow past max-age"


def test_no_store_by_default_revocation_is_immediate(no_cache: CacheStack) -> None:
    stack = no_cache
    before = stack.decisions()
    for _ in range(5):
        assert stack.through_proxy(TOKEN_A) == 200
    assert stack.decisions() == before + 5, "with no-store every request must reach authgate"

    removed = time.monotonic()
    stack.secret.write({"tokens": tokens_file(b=LINE_B)})
    wait_for(lambda: stack.through_proxy(TOKEN_A) == 401, timeout=RELOAD_BOUND + 3, what="A refused")
    assert time.monotonic() - removed <= RELOAD_BOUND


def test_a_denial_is_never_cached_so_a_new_credential_works_at_once(bounded_cache: CacheStack) -> None:
    stack = bounded_cache
    # B is tried before it exists (a deploy racing the Secret update): 401, which the controller's
    # default auth-cache-duration would keep for 5 minutes unless authgate forbids caching it.
    assert stack.through_proxy(TOKEN_B) == 401
    assert stack.through_proxy(TOKEN_B) == 401
    added = time.monotonic()
    stack.secret.write({"tokens": tokens_file(a=LINE_A, b=LINE_B)})
    wait_for(lambda: stack.through_proxy(TOKEN_B) == 200, timeout=RELOAD_BOUND + 3, what="B accepted")
    assert time.monotonic() - added <= RELOAD_BOUND


@pytest.fixture
def cache_with_exceptions(tmp_path: Path, upstream: Upstream) -> Iterator[CacheStack]:
    tokens = tokens_file(a=LINE_A, reader=f"sha256:{sha256_hex(READER)} methods=GET paths=/api/flows")
    yield from _stack(tmp_path, upstream, MAX_AGE, tokens)


def test_only_allows_that_hold_for_any_method_and_path_are_cached(cache_with_exceptions: CacheStack) -> None:
    # The cache key is the host, the Ingress's auth location and the credential: not the method, not the path.
    # An allow that depends on them must never be cached, or it would answer for every other request too.
    stack = cache_with_exceptions
    for _ in range(2):  # the anonymous health check, twice: a cached allow would be served the second time
        assert stack.gateway.request("GET", "/api/health").status == 200
    assert stack.gateway.request("GET", "/api/flows").status == 401, "an anonymous allow was cached"
    for _ in range(2):
        assert stack.gateway.request("GET", "/api/flows", bearer(READER)).status == 200
    assert stack.gateway.request("POST", "/api/flows", bearer(READER)).status == 403, "a GET-only allow was cached"
    assert stack.gateway.request("GET", "/api/admin", bearer(READER)).status == 403
    # A credential allowed everywhere on the route is cached as before.
    assert stack.through_proxy(TOKEN_A) == 200
    before = stack.decisions()
    assert stack.gateway.request("POST", "/api/anything", bearer(TOKEN_A)).status == 200
    assert stack.decisions() == before, "an allow for any method and path should have come from nginx's cache"
