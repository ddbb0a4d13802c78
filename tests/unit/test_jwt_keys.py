"""Fetching an issuer's keys over real HTTP (loopback servers): discovery, where a bearer token goes, redirects."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.jwt_keys import RemoteKeySet
from app.jwt_policy import parse_issuer
from tests.support.jose import SigningKey, jwks

KEY = SigningKey.rsa("k1")


class KeyServer:
    """One loopback HTTP server: answers from ``routes`` (path -> (status, headers, body)), records requests."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.seen: list[tuple[str, str | None]] = []  # (path, Authorization)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.seen.append((self.path, self.headers.get("Authorization")))
                status, headers, body = server.routes.get(self.path, (404, {}, b"{}"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[tuple[KeyServer, KeyServer]]:
    a, b = KeyServer(), KeyServer()
    yield a, b
    a.stop()
    b.stop()


def remote(issuer: dict[str, Any], tmp_path) -> RemoteKeySet:
    token = tmp_path / "token"
    token.write_text("pod-token\n")
    return RemoteKeySet(parse_issuer({**issuer, "bearer_token_file": str(token)}, "i", "test"))


def test_discovery_finds_the_keys_and_the_token_goes_only_to_the_configured_origin(servers, tmp_path):
    issuer_server, elsewhere = servers
    issuer_server.routes["/.well-known/openid-configuration"] = (
        200,
        {},
        json.dumps({"issuer": issuer_server.url, "jwks_uri": f"{elsewhere.url}/keys"}).encode(),
    )
    elsewhere.routes["/keys"] = (200, {}, jwks(KEY))
    keys = remote(
        {
            "issuer": issuer_server.url,
            "discovery_url": f"{issuer_server.url}/.well-known/openid-configuration",
            "audiences": ["a"],
        },
        tmp_path,
    )
    keys.refresh("k1")
    assert keys.keys is not None and keys.keys.has_kid("k1")
    assert issuer_server.seen == [("/.well-known/openid-configuration", "Bearer pod-token")]
    assert elsewhere.seen == [("/keys", None)]


def test_a_redirect_is_not_followed_and_the_last_good_keys_stay(servers, tmp_path):
    server, elsewhere = servers
    server.routes["/jwks"] = (200, {}, jwks(KEY))
    keys = remote({"issuer": "x", "jwks_url": f"{server.url}/jwks", "audiences": ["a"]}, tmp_path)
    keys.refresh("k1")
    assert keys.keys is not None
    good = keys.keys
    server.routes["/jwks"] = (302, {"Location": f"{elsewhere.url}/jwks"}, b"")
    keys.attempted_at = -1e9  # past the rate bound
    keys.refresh("k2")
    assert keys.keys is good and keys.failures == 1
    assert elsewhere.seen == []


def test_a_discovery_naming_another_issuer_loads_nothing(servers, tmp_path):
    server, _ = servers
    server.routes["/d"] = (200, {}, json.dumps({"issuer": "https://other", "jwks_uri": f"{server.url}/j"}).encode())
    server.routes["/j"] = (200, {}, jwks(KEY))
    keys = remote({"issuer": server.url, "discovery_url": f"{server.url}/d", "audiences": ["a"]}, tmp_path)
    keys.refresh("k1")
    assert keys.keys is None and keys.failures == 1
    assert [path for path, _ in server.seen] == ["/d"]
