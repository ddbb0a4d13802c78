"""Running what a render of the chart describes: its credentials and policy laid out as kubelet mounts them,
and authgate started with the Deployment's arguments. Shared by the end-to-end modules that drive real
proxies from the chart's own output."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.chart.render import RELEASE, Render
from tests.support.kubelet import KubeletSecretDir
from tests.support.procs import AuthgateProcess


def sha1_htpasswd(user: str, password: str) -> str:
    return f"{user}:{{SHA}}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


def credential_values(tokens: Mapping[str, tuple[str, str]], users: Mapping[str, str]) -> list[str]:
    """helm arguments putting test credentials in the chart's Secret: ``tokens`` maps a name to (token,
    attributes), stored as digests; ``users`` maps a user to a password, stored as ``{SHA}``."""
    lines = [
        f"{name} sha256:{hashlib.sha256(token.encode()).hexdigest()} {attrs}".rstrip()
        for name, (token, attrs) in tokens.items()
    ]
    return [
        "--set-json",
        "secret.tokens=" + json.dumps(lines),
        "--set-json",
        "secret.htpasswd=" + json.dumps([sha1_htpasswd(user, password) for user, password in users.items()]),
    ]


def arg_value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


@dataclass
class RenderedAuthgate:
    """The Secret and policy of a render on disk, and the Deployment's ``--proxy``/``--log-level``/``--server``."""

    secret: KubeletSecretDir
    policy: Path
    proxy: str
    log_level: str
    server: str | None = None

    @classmethod
    def lay_out(cls, render: Render, workdir: Path) -> RenderedAuthgate:
        secret = render.one("Secret", RELEASE)["stringData"]
        secret_dir = KubeletSecretDir(workdir / "secret")
        secret_dir.write({"tokens": secret["tokens"], "htpasswd": secret["htpasswd"]})
        policy = workdir / "policy.yaml"
        policy.write_text(render.one("ConfigMap", f"{RELEASE}-policy")["data"]["policy.yaml"])
        [container] = render.one("Deployment")["spec"]["template"]["spec"]["containers"]
        args: list[str] = container["args"]
        server = arg_value(args, "--server") if "--server" in args else None
        return cls(secret_dir, policy, arg_value(args, "--proxy"), arg_value(args, "--log-level"), server)

    def process(self, log_path: Path, *, proxy: str | None = None) -> AuthgateProcess:
        """authgate on these files, with the rendered ``--proxy`` unless another is given (not yet ready)."""
        return AuthgateProcess(
            self.secret.path,
            log_path,
            config=self.policy,
            proxy=proxy or self.proxy,
            log_level=self.log_level,
            server=self.server,
        )
