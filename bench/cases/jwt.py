"""Case 10: JWT bearer tokens. A repeated JWT against a repeated static token on the same authgate, whose route
trusts a JWT issuer (a JWKS in the Secret): both are answered from the allow memo, so the JWT must cost within
10 % of the static token. Through nginx (ingress-nginx's default path, a new connection per auth call: the
target) and asked directly over kept-alive connections, where authgate's own part is most of the cost and any
difference in it shows. Interleaved like every case, with twice the rounds at half the length
(bench/measure.py ``finer``): the ratio sits near its target, and through nginx the per-connection work of nginx
and the server, the same on both sides, makes single rounds swing on a shared machine; the CPU-cost ratio
(server CPU per request) is the steadier figure. And what the first verification of a JWT costs in-process
(app.decision.decide on a token never seen: PyJWT's signature check and the claims), RS256 and ES256, median
of several hundred."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import statistics
import time
from typing import Any

import yaml

from app.credentials import load_secret_files
from app.decision import RequestFacts, Snapshot, decide
from app.jwt_keys import JwtKeys, secret_key_sets
from app.passwords import VerifiedCache
from app.policy import parse_policy
from app.throttle import Throttle
from bench.measure import ORIGINAL, Log, Params, Ratio, Variant, finer, measure, summarize
from bench.servers import POLICY, Stack
from bench.wrk import Wrk
from tests.support.jose import SigningKey, jwks

ISSUER = "https://bench-issuer.example"
POLICY_JWT = POLICY + (
    f"    jwt_issuers:\n      - issuer: {ISSUER}\n        jwks_secret_key: jwks-bench.json\n"
    "        audiences: [authgate]\n"
)
FIRST_SAMPLES = 300


def _claims(now: float, n: int = 0) -> dict[str, Any]:
    return {"iss": ISSUER, "aud": "authgate", "sub": "bench-ci", "iat": int(now), "exp": int(now) + 86400, "jti": n}


def first_verification_us(keys: list[SigningKey]) -> dict[str, float]:
    """Median microseconds of decide() on a JWT it has not seen, per algorithm."""
    files = {"tokens": b"", "jwks-bench.json": jwks(*keys)}
    policy = parse_policy(yaml.safe_load(POLICY_JWT), "bench")
    snapshot = Snapshot(
        load_secret_files(files, "bench"),
        policy,
        VerifiedCache(10),
        jwt=JwtKeys(secret_key_sets(files, {"jwks-bench.json"}, "bench"), {}),
    )
    throttle, now = Throttle(policy.throttle), dt.datetime.now(dt.UTC)
    result = {}
    for key in keys:
        tokens = [key.sign(_claims(now.timestamp(), n)) for n in range(FIRST_SAMPLES)]
        samples = []
        for token in tokens:
            facts = RequestFacts("GET", "/api/ok", (f"Bearer {token}".encode(),), "127.0.0.1")
            started = time.perf_counter()
            decision = decide("api", facts, snapshot, throttle, now, slow_ok=False)
            samples.append(time.perf_counter() - started)
            assert decision is not None and decision.allowed, decision
        result[key.alg] = statistics.median(samples) * 1e6
    return result


def run(stack: Stack, wrk: Wrk, p: Params, log: Log) -> dict[str, Any]:
    rsa_key, ec_key = SigningKey.rsa("bench-rsa"), SigningKey.ec("bench-ec")
    token = rsa_key.sign(_claims(time.time()))
    # A static token as long as the JWT: what the header's length alone costs (the server reads it, the allow
    # memo hashes it), apart from anything JWT-specific.
    long_token = secrets.token_urlsafe(len(token))[: len(token)]
    files = {**stack.small_files(), "jwks-bench.json": jwks(rsa_key, ec_key).decode()}
    files["tokens"] += f"bench-long sha256:{hashlib.sha256(long_token.encode()).hexdigest()}\n"
    urls = stack.nginx_jwt(files, POLICY_JWT)
    variants = [
        Variant(
            "jwt_static",
            "nginx auth_request → authgate with a JWT issuer (static Bearer token, Connection: close)",
            urls["authreq_jwt"] + "/api/ok",
            stack.creds.bearer,
            serves=("nginx_jwt", "authgate:jwt"),
        ),
        Variant(
            "jwt",
            "nginx auth_request → authgate with a JWT issuer (the same RS256 JWT repeated, Connection: close)",
            urls["authreq_jwt"] + "/api/ok",
            {"Authorization": f"Bearer {token}"},
            serves=("nginx_jwt", "authgate:jwt"),
        ),
    ]
    direct = stack.authgate("jwt", files, policy=POLICY_JWT).base_url + "/auth/api"
    variants += [
        Variant(
            "jwt_static_direct",
            "authgate with a JWT issuer, asked directly (static Bearer token, kept-alive connections)",
            direct,
            stack.creds.bearer,
            ORIGINAL,
            serves=("authgate:jwt",),
        ),
        Variant(
            "jwt_direct",
            "authgate with a JWT issuer, asked directly (the same RS256 JWT repeated, kept-alive connections)",
            direct,
            {"Authorization": f"Bearer {token}"},
            ORIGINAL,
            serves=("authgate:jwt",),
        ),
        Variant(
            "jwt_long_direct",
            f"authgate with a JWT issuer, asked directly (a static token as long as the JWT, {len(token)} characters)",
            direct,
            {"Authorization": f"Bearer {long_token}"},
            ORIGINAL,
            serves=("authgate:jwt",),
        ),
    ]
    ratios = [
        Ratio("nginx→authgate, a repeated JWT / a repeated static token", "jwt", "jwt_static", 0.9),
        Ratio("authgate direct, a repeated JWT / a repeated static token", "jwt_direct", "jwt_static_direct", 0.9),
        Ratio("authgate direct, a repeated JWT / a static token as long as the JWT", "jwt_direct", "jwt_long_direct"),
    ]
    result = summarize(
        "jwt",
        "10. JWT bearer tokens: a repeated JWT against a repeated static token, through nginx (1 worker) and direct",
        variants,
        ratios,
        measure(stack, wrk, variants, finer(p), log),
    )
    first = first_verification_us([rsa_key, ec_key])
    for alg, micros in first.items():
        log(f"jwt: first verification of a {alg} JWT in decide(): {micros:.1f} µs (median of {FIRST_SAMPLES})")
    result["first_verification_us"] = first
    return result
