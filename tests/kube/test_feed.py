"""What a list result or a watch event does to the credentials, without a server: ``apply`` is a list."""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping

import pytest

from app.kube.api import SecretRef
from app.kube.feed import SecretFeed

REF = SecretRef("auth", "authgate")


def encoded(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Apply:
    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.calls: list[tuple[dict[str, bytes], str]] = []

    def __call__(self, files: Mapping[str, bytes], source: str) -> bool:
        self.calls.append((dict(files), source))
        return self.accept


def event(kind: str, name: str = "authgate", resource_version: str = "7", data: object = None) -> dict[str, object]:
    metadata = {"name": name, "resourceVersion": resource_version}
    return {"type": kind, "raw_object": {"metadata": metadata, "data": data}}


def test_an_added_or_modified_secret_is_decoded_and_applied() -> None:
    apply = Apply()
    feed = SecretFeed(REF, apply)
    assert not feed.synced
    assert feed.event(event("MODIFIED", data={"tokens": encoded("ci sha256:x\n")})) == ("MODIFIED", "7")
    assert apply.calls == [({"tokens": b"ci sha256:x\n"}, "secret auth/authgate")]
    assert feed.synced


def test_another_secrets_event_a_bookmark_and_a_deletion_apply_nothing_but_move_the_cursor() -> None:
    apply = Apply()
    feed = SecretFeed(REF, apply)
    assert feed.event(event("ADDED", name="other", data={"tokens": encoded("x")})) == ("ADDED", "7")
    assert feed.event(event("BOOKMARK", resource_version="8")) == ("BOOKMARK", "8")
    assert feed.event(event("DELETED", resource_version="9")) == ("DELETED", "9")
    assert feed.event({"type": "BOOKMARK", "raw_object": {}}) == ("BOOKMARK", "")
    assert apply.calls == [] and not feed.synced


def test_a_line_that_is_not_an_event_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    feed = SecretFeed(REF, Apply())
    with caplog.at_level(logging.WARNING, logger="authgate.watch"):
        assert feed.event(None) is None
    assert "ignoring a watch line that is not a JSON event" in caplog.text


def test_bad_base64_a_rejection_or_a_failing_apply_keep_the_last_good_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(files: Mapping[str, bytes], source: str) -> bool:
        raise RuntimeError("boom")

    with caplog.at_level(logging.WARNING, logger="authgate.watch"):
        SecretFeed(REF, Apply()).deliver({"tokens": "not base64!"}, "list", "3")
        rejected = SecretFeed(REF, Apply(accept=False))
        rejected.deliver({"tokens": encoded("x")}, "MODIFIED", "4")
        failing = SecretFeed(REF, broken)
        failing.deliver({"tokens": encoded("x")}, "ADDED", "5")
    assert "list: data is not valid base64; keeping the last good credentials" in caplog.text
    assert "MODIFIED data rejected; keeping the last good credentials" in caplog.text
    assert "applying the ADDED data failed; keeping the last good credentials" in caplog.text
    assert not rejected.synced and not failing.synced
