"""Property-based fuzz of the Authorization header against the real server: never a 5xx."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import TOKEN_A, basic, serving, token_line
from tests.support.procs import AuthgateProcess

# Header bytes a proxy could pass through: anything but CR, LF and NUL.
header_bytes = st.binary(min_size=0, max_size=300).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", b"")
)
schemes = st.sampled_from([b"Bearer ", b"Basic ", b"bearer ", b"BASIC  ", b"", b"Digest ", b"Bearer\t"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthgateProcess]:
    with serving(tmp_path_factory.mktemp("fuzz"), token_line("ci-a", TOKEN_A)) as proc:
        yield proc


def raw_status(port: int, header_lines: list[bytes]) -> int:
    request = (
        b"GET /auth/api HTTP/1.1\r\nHost: authgate\r\nX-Original-Method: GET\r\n"
        b"X-Original-URL: http://h/api/flows\r\n"
        + b"".join(h + b"\r\n" for h in header_lines)
        + b"Connection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    status_line = data.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    return int(status_line.split()[1])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scheme=schemes, value=header_bytes, extra=st.lists(header_bytes, max_size=2))
def test_any_authorization_header_gets_a_clear_answer(server, scheme, value, extra):
    lines = [b"Authorization: " + scheme + value] + [b"Authorization: " + e for e in extra]
    code = raw_status(server.port, lines)
    assert code < 500
    if all(0x20 <= b < 0x7F or b == 0x09 for line in lines for b in line):
        # A well-formed HTTP header the server accepted: a decision, never a crash or a 400.
        assert code in (200, 401, 403)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=st.text(max_size=40), password=st.text(max_size=80))
def test_any_basic_credential_gets_a_decision(server, user, password):
    try:
        header = basic(user, password).encode("ascii")
    except UnicodeEncodeError:
        return
    assert raw_status(server.port, [b"Authorization: " + header]) in (401, 403)


def test_oversize_header_is_a_clear_answer(server):
    assert raw_status(server.port, [b"Authorization: Bearer " + b"a" * 20000]) in (401, 400, 431)
