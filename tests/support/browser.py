"""A real browser for the tests: Debian's Chromium, headless, driven by Playwright (scripts/tools/70-browser.sh).

Playwright's own browser download cannot work here, so the Python driver launches ``/usr/bin/chromium`` (found
with :func:`require_tool`: missing, the test fails). Each :class:`Browser` has a fresh profile, so no cookie,
cache or HSTS entry leaks between tests, and runs with the flags this closed network needs (without
``--disable-background-networking`` and friends Chromium's own connections are refused and it stalls)::

    with Browser(tmp_path, resolve={"prefect.example.com": "127.0.0.1"}) as browser:
        page = browser.page()
        page.goto(f"https://prefect.example.com:{port}/")    # the host name as the user types it
        browser.cookies()                                    # what the profile holds

``resolve`` maps host names to loopback addresses inside Chromium (``--host-resolver-rules``), so a page is
asked for under its real host name: the ``Host`` header, ``Origin`` and cookie scoping are a user's. TLS is
a self-signed certificate (:func:`self_signed_certificate`) that the context trusts
(``ignore_https_errors``). Seen here with Chromium 156: ``http://localhost`` and ``http://127.0.0.1`` count as
secure contexts and take ``Secure`` (and ``__Host-``) cookies too; the tests use HTTPS anyway, as users do.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.tools import require_tool

# Headless on a shared, closed machine: no sandbox (root), no GPU, no QUIC, no background fetches (refused
# here, and they would stall start-up), no first-run UI.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def self_signed_certificate(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    """(certificate, key) PEM files for ``hosts`` (subjectAltName), valid for a day, made with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "tls.crt", directory / "tls.key"
    san = ",".join(f"DNS:{host}" for host in hosts) + ",IP:127.0.0.1"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        [str(require_tool("openssl")), *request, "-subj", f"/CN={hosts[0]}", "-addext", f"subjectAltName={san}"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


class Browser:
    """Headless Chromium with a fresh profile under ``workdir``; a context manager. ``page()`` opens a tab."""

    def __init__(self, workdir: Path, *, resolve: Mapping[str, str] | None = None, timeout_ms: int = 15_000) -> None:
        self.executable = require_tool("chromium")
        self.profile = workdir / "chromium-profile"
        self.resolve = dict(resolve or {})
        self.timeout_ms = timeout_ms
        self._playwright: Any = None
        self.context: Any = None

    def start(self) -> Browser:
        from playwright.sync_api import sync_playwright

        shutil.rmtree(self.profile, ignore_errors=True)
        args = list(CHROMIUM_FLAGS)
        if self.resolve:
            rules = ", ".join(f"MAP {host} {address}" for host, address in self.resolve.items())
            args.append(f"--host-resolver-rules={rules}")
        self._playwright = sync_playwright().start()
        try:
            self.context = self._playwright.chromium.launch_persistent_context(
                str(self.profile),
                executable_path=str(self.executable),
                headless=True,
                args=args,
                ignore_https_errors=True,
            )
        except BaseException:
            self._playwright.stop()
            raise
        self.context.set_default_timeout(self.timeout_ms)
        return self

    def page(self) -> Any:
        """A new tab (a Playwright ``Page``)."""
        return self.context.new_page()

    def cookies(self) -> list[dict[str, Any]]:
        """Every cookie the profile holds, as Playwright reports them (name, value, domain, secure...)."""
        result: list[dict[str, Any]] = self.context.cookies()
        return result

    def stop(self) -> None:
        if self.context is not None:
            self.context.close()
            self.context = None
        if self._playwright is not None:
            self._playwright.stop()
            self._playwright = None

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
