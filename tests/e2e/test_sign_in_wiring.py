"""The chart's sign-in wiring for ingress-nginx, in a real browser, with a stand-in for authgate's answers.

The Prefect example values with ``signIn.enabled`` are rendered with the real helm and served by real nginx
exactly as ingress-nginx v1.15 renders those Ingresses (tests/e2e/nginx.py: ``auth-signin`` as
``error_page 401`` to a named location answering 302, ``auth-always-set-cookie``), over HTTPS with a
self-signed certificate. What authgate would answer is played by the recording upstream: its
``/__status/401`` refuses every auth subrequest, and the sign-in Ingress's backend serves its stand-in page.
So this proves the wiring alone: a browser opening the UI lands on ``<prefix>sign_in`` with the page it
asked for in ``rd`` (a same-host path), and an API call still gets 401. The whole sign-in, with authgate
itself, is test_sign_in_doors.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.chart.render import PREFECT_VALUES, Render
from tests.e2e.chart import nginx_ingress_specs
from tests.e2e.conftest import Upstream, new_test_id
from tests.e2e.nginx import NginxProcess
from tests.support.browser import Browser, self_signed_certificate

pytestmark = [pytest.mark.e2e, pytest.mark.helm]

HOST = "prefect.example.com"


def test_ingress_nginx_sends_a_browser_to_the_sign_in_page_and_an_api_call_gets_401(
    upstream: Upstream, tmp_path: Path
) -> None:
    render = Render.of("sign-in-wiring", ["-f", str(PREFECT_VALUES), "--set", "signIn.enabled=true"])
    specs = nginx_ingress_specs(render, authgate_port=upstream.port, backend=upstream.address)
    # Every auth subrequest is refused (401), as authgate refuses a browser without a session.
    refuse = f"http://{upstream.address}/__status/401"
    specs = [dataclasses.replace(s, auth_url=refuse) if s.auth_url else s for s in specs]
    assert {(s.name, s.path) for s in specs} == {
        ("authgate-api", "/api"),
        ("authgate-ui", "/"),
        ("authgate-sign-in", "/authgate"),
    }
    tls = self_signed_certificate(tmp_path / "tls", [HOST])
    with NginxProcess(specs, tmp_path / "nginx", tls=tls) as nginx:
        assert "error_page 401 = @" in nginx.conf_text
        assert "return 302 https://$http_host/authgate/sign_in?rd=$escaped_request_uri;" in nginx.conf_text
        assert "add_header          Set-Cookie $auth_cookie always;" in nginx.conf_text
        origin = f"https://{HOST}:{nginx.port}"
        with Browser(tmp_path, resolve={HOST: "127.0.0.1"}) as browser:
            page = browser.page()
            response = page.goto(f"{origin}/flows/run-1?tab=logs")
            assert response is not None and response.status == 200
            url = urlsplit(page.url)
            assert (url.scheme, url.netloc, url.path) == ("https", f"{HOST}:{nginx.port}", "/authgate/sign_in")
            assert parse_qs(url.query) == {"rd": ["/flows/run-1?tab=logs"]}
            # The sign-in Ingress reached its backend (here the stand-in page) without any auth subrequest.
            assert page.inner_text("#path") == "/authgate/sign_in?rd=%2Fflows%2Frun-1%3Ftab%3Dlogs"
        # An API call is never redirected: the API Ingress has no auth-signin.
        test_id = new_test_id()
        answer = httpx.get(
            f"{nginx.base_url}/api/flows",
            headers={"Host": HOST, "Accept": "text/html", "X-Test-Id": test_id},
            verify=False,  # the test's own self-signed certificate
        )
        assert answer.status_code == 401
        assert "location" not in answer.headers
        # Only the refusing auth subrequest arrived; the application never saw the call.
        assert [r["raw_path"] for r in upstream.records(test_id)] == ["/__status/401"]
