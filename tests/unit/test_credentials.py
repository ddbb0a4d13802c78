import datetime as dt
import hashlib

import pytest

from app.credentials import (
    load_secret_files,
    parse_htpasswd,
    parse_tokens,
    read_secret_dir,
    token_digest,
)
from app.errors import ConfigError
from tests.support.kubelet import KubeletSecretDir

TOKEN = "tok-0123456789abcdef-XYZ"
DIGEST = hashlib.sha256(TOKEN.encode()).hexdigest()


def test_digest_and_plain_lines_are_stored_as_digests():
    tokens = parse_tokens(f"# comment\n\nci sha256:{DIGEST} routes=api\nlegacy {TOKEN}x\n")
    assert [t.name for t in tokens] == ["ci", "legacy"]
    assert tokens[0].digest == token_digest(TOKEN)
    assert not tokens[0].plain and tokens[1].plain
    assert tokens[1].digest == token_digest(TOKEN + "x")
    assert TOKEN not in repr(tokens)


def test_attributes_are_parsed():
    (token,) = parse_tokens(
        f"t sha256:{DIGEST} expires=2027-01-31T00:00:00Z routes=api,ui methods=get,HEAD paths=/api/flows,/api/x/\n"
    )
    assert token.expires == dt.datetime(2027, 1, 31, tzinfo=dt.UTC)
    assert token.routes == {"api", "ui"}
    assert token.methods == {"GET", "HEAD"}
    assert token.paths == ("/api/flows", "/api/x")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("only-a-name\n", "expected 'NAME SECRET"),
        ("bad/name sha256:" + DIGEST + "\n", "name:"),
        ("t sha256:abc\n", "64 hex digits"),
        ("t short\n", "at least 16"),
        ("t has,comma-0123456789\n", "plain token may hold only"),
        (f"t sha256:{DIGEST} colour=blue\n", "unknown attribute 'colour'"),
        (f"t sha256:{DIGEST} expires=tomorrow\n", "not an RFC 3339 time"),
        (f"t sha256:{DIGEST} expires=2027-01-31T00:00:00\n", "time zone"),
        (f"t sha256:{DIGEST} paths=api\n", "must start with '/'"),
        (f"t sha256:{DIGEST} methods=GET,\n", "empty item"),
        (f"t sha256:{DIGEST} routes=a routes=b\n", "given twice"),
        (f"a sha256:{DIGEST}\nb sha256:{DIGEST}\n", "same token as line 2"),
        (f"a sha256:{DIGEST}\na {TOKEN}\n", "already used on line 2"),
    ],
)
def test_malformed_token_lines_name_file_and_line_but_not_the_secret(text, reason):
    with pytest.raises(ConfigError) as err:
        parse_tokens("# header\n" + text, "secret/tokens")
    message = str(err.value)
    assert reason in message
    assert message.startswith("secret/tokens:")
    assert err.value.line is not None and err.value.line >= 2
    assert TOKEN not in message and DIGEST not in message


def test_htpasswd_kinds_and_rejections():
    users = parse_htpasswd("a:$2y$05$abc\nb:$apr1$x$y\nc:{SHA}abc=\nd:$6$s$h\n")
    assert {u.name: u.kind for u in users} == {"a": "bcrypt", "b": "apr1", "c": "sha1", "d": "sha512-crypt"}
    with pytest.raises(ConfigError, match="htpasswd:1: unsupported hash"):
        parse_htpasswd("plain:secretpassword\n")
    with pytest.raises(ConfigError, match="htpasswd:2: user 'a' already defined on line 1"):
        parse_htpasswd("a:{SHA}x\na:{SHA}y\n")
    with pytest.raises(ConfigError, match="expected 'user:hash'"):
        parse_htpasswd("nocolon\n")


def test_secret_files_need_at_least_one_file_and_valid_utf8():
    with pytest.raises(ConfigError, match="neither"):
        load_secret_files({}, "dir")
    with pytest.raises(ConfigError, match=r"dir/tokens:2: not valid UTF-8"):
        load_secret_files({"tokens": b"# ok\n\xff\xfe\n"}, "dir")
    creds = load_secret_files({"htpasswd": b"u:{SHA}x\n"}, "dir")
    assert creds.tokens == () and set(creds.users) == {"u"}


def test_find_token_matches_only_the_exact_token():
    creds = load_secret_files({"tokens": f"ci sha256:{DIGEST}\n".encode()}, "dir")
    assert creds.find_token(TOKEN).name == "ci"
    assert creds.find_token(TOKEN + "x") is None
    assert creds.find_token(TOKEN[:-1]) is None


def test_reads_a_kubelet_layout_through_its_symlinks(tmp_path):
    secret = KubeletSecretDir(tmp_path / "secret")
    secret.write({"tokens": f"ci sha256:{DIGEST}\n"})
    assert (tmp_path / "secret" / "tokens").is_symlink()
    assert read_secret_dir(tmp_path / "secret") == {"tokens": f"ci sha256:{DIGEST}\n".encode()}
    secret.write({"htpasswd": "u:{SHA}x\n"})
    assert read_secret_dir(tmp_path / "secret") == {"htpasswd": b"u:{SHA}x\n"}
    with pytest.raises(FileNotFoundError):
        read_secret_dir(tmp_path / "missing")
