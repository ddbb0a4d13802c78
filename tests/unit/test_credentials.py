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


def test_a_token_named_like_a_user_is_refused():
    with pytest.raises(ConfigError) as err:
        load_secret_files({"tokens": f"alice sha256:{DIGEST}\n".encode(), "htpasswd": b"alice:{SHA}x\n"}, "s")
    assert "token name 'alice' is also an htpasswd user" in str(err.value) and TOKEN not in str(err.value)


@pytest.mark.parametrize("path", ["/api/flows#x", "/api/%66lows", "/api/flows;x", "/api/flows?x"])
def test_token_paths_must_be_raw_prefixes(path):
    with pytest.raises(ConfigError) as err:
        parse_tokens(f"t sha256:{DIGEST} paths={path}\n")
    assert "a raw path prefix" in str(err.value)


def test_only_regular_files_are_read_and_never_past_the_cap(tmp_path, monkeypatch):
    import os
    import threading

    from app import credentials

    directory = tmp_path / "secret"
    directory.mkdir()
    (directory / "tokens").symlink_to("/dev/zero")
    with pytest.raises(ConfigError) as err:
        read_secret_dir(directory)
    assert "not a regular file" in str(err.value)

    (directory / "tokens").unlink()
    os.mkfifo(directory / "tokens")  # nobody ever writes to it: a blocking open would hang forever
    result: list[BaseException | dict[str, bytes]] = []
    reader = threading.Thread(target=lambda: result.append(_catch(read_secret_dir, directory)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "reading a FIFO blocked the reload"
    assert isinstance(result[0], ConfigError) and "not a regular file" in str(result[0])

    (directory / "tokens").unlink()
    monkeypatch.setattr(credentials, "MAX_FILE_BYTES", 1000)
    (directory / "tokens").write_bytes(b"#" * 1001)
    with pytest.raises(ConfigError) as err:
        read_secret_dir(directory)
    assert "larger than 1000 bytes" in str(err.value)
    (directory / "tokens").write_bytes(b"#" * 1000)
    assert read_secret_dir(directory) == {"tokens": b"#" * 1000}


def _catch(function, *args):
    try:
        return function(*args)
    except BaseException as exc:
        return exc


@pytest.mark.parametrize("token", ["", "ci-token-0123456789", "é-ü-token", "x" * 10_000])
def test_token_digest_is_hashlibs_sha256_of_the_text_or_its_bytes(token):
    """token_digest may use CPython's own SHA-256 rather than OpenSSL's: the digest is the same either way."""
    import hashlib

    expected = hashlib.sha256(token.encode()).digest()
    assert token_digest(token) == expected and token_digest(token.encode()) == expected
