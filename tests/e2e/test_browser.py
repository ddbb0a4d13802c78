"""The browser harness itself (tests/support/browser.py): headless Chromium loads the stand-in UI of the
recording upstream, whose same-origin ``fetch`` and WebSocket reach the upstream and report into the DOM.
The sign-in flows through each front door build on exactly this (test_sign_in_doors.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Upstream
from tests.support.browser import Browser

pytestmark = pytest.mark.e2e


def test_chromium_runs_the_stand_in_ui_and_its_same_origin_calls(upstream: Upstream, tmp_path: Path) -> None:
    with Browser(tmp_path) as browser:
        page = browser.page()
        response = page.goto(f"http://localhost:{upstream.port}/flows/run-1?tab=logs")
        assert response is not None and response.status == 200
        assert page.title() == "stand-in UI"
        assert page.inner_text("#path") == "/flows/run-1?tab=logs"
        page.wait_for_function("document.getElementById('fetch').textContent !== 'pending'")
        page.wait_for_function("document.getElementById('ws').textContent !== 'pending'")
        # No identity here (no authgate in front): the calls arrived, and the page says so.
        assert page.inner_text("#fetch").strip() == "200"
        assert page.inner_text("#ws").strip() == "open"
