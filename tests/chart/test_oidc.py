"""``signIn.oidc``: the OpenID client's values rendered into the policy's ``sign_in.oidc``, the client secret
projected into the credential directory, group and domain principals through ``config.policy``, and the
contradictions refused by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.policy import parse_policy
from tests.chart.render import RELEASE, SCENARIOS, Render, template

pytestmark = [pytest.mark.helm, pytest.mark.xdist_group("chart")]

OIDC = (
    *("--set", "signIn.oidc.enabled=true", "--set", "signIn.oidc.issuer=https://id.example.com"),
    *("--set", "signIn.oidc.clientId=prefect", "--set", "signIn.oidc.clientSecret.existingSecret=prefect-oidc"),
)
RULES = ("--set-json", 'config.policy.routes.ui.principals=["group:ops","domain:example.com"]')


def policy(render: Render) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(render.one("ConfigMap", f"{RELEASE}-policy")["data"]["policy.yaml"])
    return loaded


def test_the_oidc_values_reach_the_policy_and_authgate_parses_it() -> None:
    r = Render.of("sign-in-oidc", [*SCENARIOS["sign-in"], *OIDC, *RULES])
    loaded = policy(r)
    assert loaded["sign_in"]["oidc"] == {
        "issuer": "https://id.example.com",
        "client_id": "prefect",
        "scopes": ["openid", "email", "profile"],
        "principal_claim": "email",
        "require_email_verified": True,
        "groups_claim": "groups",
        "algorithms": ["RS256", "ES256"],
        "end_session": True,
    }
    assert loaded["routes"]["ui"]["principals"] == ["group:ops", "domain:example.com"]
    parsed = parse_policy(loaded, "render")
    assert parsed.session.oidc is not None and parsed.session.oidc.client_id == "prefect"
    assert parsed.session.groups == frozenset({"ops"})


def test_every_oidc_value_is_rendered() -> None:
    r = Render.of(
        "sign-in-oidc-all",
        [
            *SCENARIOS["sign-in"],
            *OIDC,
            *("--set-json", 'signIn.oidc.scopes=["openid","email","groups"]'),
            *(
                "--set",
                "signIn.oidc.principalClaim=preferred_username",
                "--set",
                "signIn.oidc.requireEmailVerified=false",
            ),
            *("--set", "signIn.oidc.groupsClaim=", "--set-json", 'signIn.oidc.algorithms=["ES256"]'),
            *("--set", "signIn.oidc.redirectUrl=https://prefect.example.com/authgate/oidc/callback"),
            *("--set", "signIn.oidc.displayName=Example SSO", "--set", "signIn.oidc.endSession=false"),
        ],
    )
    oidc = policy(r)["sign_in"]["oidc"]
    assert oidc["scopes"] == ["openid", "email", "groups"]
    assert (oidc["principal_claim"], oidc["require_email_verified"], oidc["groups_claim"]) == (
        "preferred_username",
        False,
        None,
    )
    assert (oidc["algorithms"], oidc["display_name"], oidc["end_session"]) == (["ES256"], "Example SSO", False)
    assert oidc["redirect_url"] == "https://prefect.example.com/authgate/oidc/callback"
    assert parse_policy(policy(r), "render").session.oidc is not None


def test_the_client_secret_is_projected_beside_the_credentials() -> None:
    r = Render.of("sign-in-oidc", [*SCENARIOS["sign-in"], *OIDC])
    pod = r.one("Deployment", RELEASE)["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "secret"]
    assert volume["projected"]["sources"] == [
        {"secret": {"name": RELEASE}},
        {"secret": {"name": "prefect-oidc", "items": [{"key": "client-secret", "path": "oidc-client-secret"}]}},
    ]
    assert volume["projected"]["defaultMode"] == 0o440
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "secret"]
    assert "subPath" not in mount  # kubelet updates a projected volume live, never a subPath


def test_without_oidc_the_secret_volume_is_unchanged(rendered: Any) -> None:
    pod = rendered("sign-in").one("Deployment", RELEASE)["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "secret"]
    assert "projected" not in volume and volume["secret"]["secretName"] == RELEASE


def test_authgate_check_loads_the_rendered_oidc_policy(tmp_path: Path) -> None:
    r = Render.of("sign-in-oidc", [*SCENARIOS["sign-in"], *OIDC, *RULES])
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    for key, value in r.one("Secret", RELEASE)["stringData"].items():
        (secret_dir / key).write_text(value)
    (secret_dir / "oidc-client-secret").write_text("the-client-secret\n")
    config = tmp_path / "policy.yaml"
    config.write_text(r.one("ConfigMap", f"{RELEASE}-policy")["data"]["policy.yaml"])
    command = [sys.executable, "-m", "app", "check", "--secret-dir", str(secret_dir), "--config", str(config)]
    checked = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stderr
    assert (
        "openid sign-in: issuer=https://id.example.com client_id=prefect principal_claim=email "
        "client secret (oidc-client-secret): present"
    ) in checked.stdout
    assert "the-client-secret" not in checked.stdout + checked.stderr


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (["--set", "signIn.enabled=false", *OIDC], "signIn.oidc.enabled needs signIn.enabled"),
        ([*OIDC, "--set", "signIn.oidc.issuer="], "set issuer"),
        ([*OIDC, "--set", "signIn.oidc.clientId="], "clientId"),
        ([*OIDC, "--set", "signIn.oidc.clientSecret.existingSecret="], "signIn.oidc.clientSecret.existingSecret"),
        ([*OIDC, "--set-json", 'signIn.oidc.algorithms=["HS256"]'], "algorithms"),
        ([*OIDC, "--set-json", 'signIn.oidc.scopes=["email"]'], "scopes"),
    ],
)
def test_contradictory_oidc_values_fail_naming_the_keys(settings: list[str], named: str) -> None:
    result = template([*SCENARIOS["sign-in"], *settings], check=False)
    assert result.returncode != 0
    assert named in result.stderr, result.stderr
