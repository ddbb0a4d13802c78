"""JWTs from a real OpenID provider (npm ``oidc-provider``, tests/oidc/provider.mjs) through real nginx: the
client credentials grant with a resource indicator gives an RS256 access token for audience ``authgate``;
authgate trusts the provider by its discovery URL and answers nginx's auth subrequests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.conftest import HOST, Gateway, Upstream, bearer, new_test_id, policy_yaml, tokens_file
from tests.e2e.nginx import NginxProcess, prefect_ingresses
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import AuthgateProcess, Process, free_port, wait_http
from tests.support.tools import require_tool

pytestmark = pytest.mark.e2e

OIDC_DIR = Path(__file__).resolve().parents[1] / "oidc"
CLIENT = ("ci-deploy", "ci-deploy-secret-0123456789")
RESOURCE = "https://authgate.test/api"


@dataclass
class OidcStack:
    gateway: Gateway
    authgate: AuthgateProcess
    provider: Process
    issuer: str

    def token(self, resource: str = RESOURCE) -> httpx.Response:
        return httpx.post(
            f"{self.issuer}/token",
            auth=CLIENT,
            data={"grant_type": "client_credentials", "resource": resource, "scope": "api"},
            timeout=10,
        )


def start_provider(workdir: Path) -> tuple[Process, str]:
    node = require_tool("node")
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("oidc-provider is not installed: run scripts/tools/80-oidc.sh (scripts/test.sh does)")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    jwk.update(kid="op-1", use="sig", alg="RS256")
    keys = workdir / "provider-jwks.json"
    keys.write_text(json.dumps({"keys": [jwk]}))
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    provider = Process([str(node), str(OIDC_DIR / "provider.mjs"), str(port), str(keys)], workdir / "provider.log")
    try:
        wait_http(f"{issuer}/.well-known/openid-configuration")
    except BaseException:
        provider.stop()
        raise
    return provider, issuer


@pytest.fixture
def oidc(tmp_path: Path, upstream: Upstream) -> Iterator[OidcStack]:
    provider, issuer = start_provider(tmp_path)
    try:
        secret = KubeletSecretDir(tmp_path / "secret")
        secret.write({"tokens": tokens_file()})
        policy = policy_yaml().replace(
            "      - GET /api/ready\n",
            "      - GET /api/ready\n"
            "    jwt_issuers:\n"
            f"      - issuer: {issuer}\n"
            f"        discovery_url: {issuer}/.well-known/openid-configuration\n"
            "        audiences: [authgate]\n"
            "        algorithms: [RS256]\n"
            "        claims: {scope: api}\n"
            "        principal_claim: client_id\n"
            '        principal_prefix: "oidc:"\n',
        )
        config = tmp_path / "policy.yaml"
        config.write_text(policy)
        authgate = AuthgateProcess(secret.path, tmp_path / "authgate.log", config=config, proxy="ingress-nginx")
        try:
            authgate.wait_ready()
            specs = prefect_ingresses(host=HOST, authgate_port=authgate.port, backend=upstream.address)
            with NginxProcess(specs, tmp_path / "nginx") as nginx:
                yield OidcStack(Gateway("nginx", nginx.port, upstream), authgate, provider, issuer)
        finally:
            authgate.stop()
    finally:
        provider.stop()


def test_a_client_credentials_jwt_reaches_the_upstream_as_its_client(oidc: OidcStack) -> None:
    issued = oidc.token()
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    for _ in range(3):  # the first is verified (its keys fetched by discovery), the others remembered
        test_id = new_test_id()
        answer = oidc.gateway.request("GET", "/api/flows", {**bearer(token), "X-Test-Id": test_id})
        assert answer.status == 200
        [record] = oidc.gateway.upstream.records(test_id)
        assert record["headers"]["x-auth-request-user"] == ["oidc:ci-deploy"]


def test_a_tampered_or_foreign_jwt_gets_invalid_token(oidc: OidcStack) -> None:
    token = oidc.token().json()["access_token"]
    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}AAAA"
    direct = httpx.get(
        oidc.authgate.base_url + "/auth/api",
        headers={**bearer(tampered), "X-Original-URL": f"http://{HOST}/api/flows", "X-Original-Method": "GET"},
        timeout=5,
    )
    assert direct.status_code == 401
    assert (
        direct.headers["www-authenticate"]
        == 'Bearer realm="prefect-api", error="invalid_token", Basic realm="prefect-api", charset="UTF-8"'
    )
    assert oidc.gateway.request("GET", "/api/flows", bearer(tampered)).status == 401
    assert tampered not in oidc.authgate.output() and token not in oidc.authgate.output()


def test_the_provider_down_keeps_its_tokens_verifiable_with_the_last_good_keys(oidc: OidcStack) -> None:
    first, second = oidc.token().json()["access_token"], oidc.token().json()["access_token"]
    assert oidc.gateway.request("GET", "/api/flows", bearer(first)).status == 200  # keys fetched
    oidc.provider.stop()
    # a token never seen before is verified with the keys already loaded: no fetch needed, none possible
    assert oidc.gateway.request("GET", "/api/flows", bearer(second)).status == 200
