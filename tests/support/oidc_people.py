"""A real OpenID provider for the sign-in of people (npm ``oidc-provider``, tests/oidc/people.mjs): started per
test module on a free port with keys the test makes, and an HTTP client that signs an account in at it the
way a browser does (the authorization request, the test login form, the redirect back), stopping at the
redirect to authgate's callback."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.procs import Process, free_port, wait_http
from tests.support.tools import require_tool

OIDC_DIR = Path(__file__).resolve().parents[1] / "oidc"
CLIENT_ID = "authgate"
CLIENT_SECRET = "authgate-oidc-client-secret-0123456789"


class PeopleProvider:
    """``node people.mjs PORT JWKS``: a context manager; ``issuer`` is its URL."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.process: Process | None = None

    def start(self) -> PeopleProvider:
        node = require_tool("node")
        if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
            pytest.fail("oidc-provider is not installed: run scripts/tools/80-oidc.sh (scripts/test.sh does)")
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
        jwk.update(kid="people-1", use="sig", alg="RS256")
        self.workdir.mkdir(parents=True, exist_ok=True)
        keys = self.workdir / "people-jwks.json"
        keys.write_text(json.dumps({"keys": [jwk]}))
        self.process = Process(
            [str(node), str(OIDC_DIR / "people.mjs"), str(self.port), str(keys)], self.workdir / "people.log"
        )
        try:
            wait_http(f"{self.issuer}/.well-known/openid-configuration")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def tamper(self, on: bool) -> None:
        """Whether the token endpoint alters each ID token's payload after signing it."""
        answer = httpx.get(f"{self.issuer}/test/mode", params={"tamper": "1" if on else "0"}, timeout=5)
        answer.raise_for_status()

    def sign_in(self, authorize_url: str, account: str) -> str:
        """Signs ``account`` in at the provider from authgate's redirect to it; the URL the provider then sends
        the browser to (authgate's callback, with ``code`` and ``state``)."""
        with httpx.Client(timeout=10) as client:
            answer = client.get(authorize_url)
            for _ in range(10):
                location = answer.headers.get("location")
                if location is None:
                    break
                target = urllib.parse.urljoin(str(answer.url), location)
                if not target.startswith(self.issuer):
                    return target
                answer = client.get(target)
                if answer.request.url.path.startswith("/interaction/") and answer.status_code == 200:
                    answer = client.post(str(answer.request.url) + "/login", data={"login": account})
            raise AssertionError(
                f"the provider did not send the browser back: {answer.status_code} {answer.text[:200]}"
            )

    def __enter__(self) -> PeopleProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
