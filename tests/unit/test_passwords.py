import subprocess

import bcrypt
import pytest

from app.credentials import parse_htpasswd
from app.passwords import VerifiedCache, verify_hash
from tests.support.tools import require_tool


def _htpasswd_line(flag: str, user: str, password: str) -> str:
    htpasswd = require_tool("htpasswd")
    args = [str(htpasswd), "-nb", flag, user, password] if flag else [str(htpasswd), "-nb", user, password]
    if flag == "-B":
        args.insert(3, "-C")
        args.insert(4, "4")
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize(("flag", "kind"), [("-B", "bcrypt"), ("-m", "apr1"), ("-s", "sha1"), ("", "apr1")])
def test_hashes_made_by_apache_htpasswd_verify(flag, kind):
    (user,) = parse_htpasswd(_htpasswd_line(flag, "alice", "correct horse") + "\n")
    assert user.kind == kind
    assert verify_hash(user, "correct horse")
    assert not verify_hash(user, "correct horsE")
    assert not verify_hash(user, "")


@pytest.mark.parametrize("prefix", ["$2y$", "$2b$", "$2a$"])
def test_all_bcrypt_prefixes(prefix):
    hashed = bcrypt.hashpw(b"pw-\xc3\xa9", bcrypt.gensalt(4)).decode()
    (user,) = parse_htpasswd(f"u:{prefix}{hashed[4:]}\n")
    assert verify_hash(user, "pw-é")
    assert not verify_hash(user, "pw-e")


def test_sha_crypt_variants():
    from passlib.hash import sha256_crypt, sha512_crypt

    for handler in (sha256_crypt, sha512_crypt):
        (user,) = parse_htpasswd(f"u:{handler.using(rounds=1000).hash('s3cret')}\n")
        assert verify_hash(user, "s3cret") and not verify_hash(user, "s3cre")


def test_overlong_and_broken_inputs_are_refused_not_raised():
    hashed = bcrypt.hashpw(b"x" * 72, bcrypt.gensalt(4)).decode()
    (user,) = parse_htpasswd(f"u:{hashed}\n")
    assert verify_hash(user, "x" * 72)
    assert not verify_hash(user, "x" * 73)  # bcrypt would silently truncate; we refuse
    (broken,) = parse_htpasswd("u:$2y$10$notreallyahash\n")
    assert not verify_hash(broken, "anything")


def test_verified_cache_holds_no_credential_and_is_bounded():
    (a,) = parse_htpasswd("a:{SHA}x\n")
    (b,) = parse_htpasswd("b:{SHA}x\n")
    cache = VerifiedCache(max_entries=2)
    cache.add(a, "password-a")
    assert cache.contains(a, "password-a")
    assert not cache.contains(a, "password-b")
    assert not cache.contains(b, "password-a")
    stored = b"".join(cache._entries)
    assert b"password-a" not in stored
    assert all(len(key) == 32 for key in cache._entries)  # HMAC-SHA256 values only
    cache.add(b, "1")
    cache.add(b, "2")
    assert len(cache) == 2
    assert not cache.contains(a, "password-a")  # least recently used went first
    # A changed stored hash (password rotated in the Secret) never hits an old entry.
    (a2,) = parse_htpasswd("a:{SHA}y\n")
    cache.add(a, "p")
    assert not cache.contains(a2, "p")
    assert not VerifiedCache(max_entries=0).contains(a, "p")


def test_decoys_follow_the_kinds_and_costs_in_the_file():
    from collections import Counter

    from app.credentials import User
    from app.passwords import DecoyFactory, Decoys, hash_cost

    users = {f"b{i}": User(f"b{i}", bcrypt.hashpw(b"x", bcrypt.gensalt(5)).decode(), "bcrypt") for i in range(3)}
    users["s"] = User("s", "{SHA}" + "A" * 27 + "=", "sha1")
    users["r"] = User("r", "$6$rounds=6000$salt$" + "x" * 86, "sha512-crypt")
    factory = DecoyFactory()
    decoys = Decoys(users, factory)
    costs = Counter(hash_cost(decoys.for_name(f"unknown-{i}")) for i in range(5000))
    assert set(costs) == {("bcrypt", 5), ("sha1", 0), ("sha512-crypt", 6000)}
    # in proportion to the users: 3/5, 1/5, 1/5
    assert 0.55 < costs[("bcrypt", 5)] / 5000 < 0.65 and 0.15 < costs[("sha1", 0)] / 5000 < 0.25
    # the same name always gets the same decoy, on every replica (the key comes from the Secret)
    again = Decoys(dict(reversed(users.items())), DecoyFactory())
    for i in range(50):
        assert hash_cost(again.for_name(f"unknown-{i}")) == hash_cost(decoys.for_name(f"unknown-{i}"))
    # and a decoy never verifies
    assert not any(verify_hash(decoys.for_name(f"n{i}"), "x") for i in range(20))


def test_a_file_without_users_costs_nothing_to_probe():
    from app.passwords import Decoys, is_slow

    assert not is_slow(Decoys({}).for_name("anyone"))
