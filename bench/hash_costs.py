"""What one check of each supported htpasswd hash kind costs here, and what each throttle table's entry costs
in bytes: the figures behind app.passwords.SLOW_KINDS and the memory bounds in docs/security.md.

    python bench/hash_costs.py

Hash kinds: a correct password checked with app.passwords.verify_hash, at the cost each tool writes by default
(``htpasswd -s``, ``-m``, ``-B`` at 5 and 10, ``mkpasswd -m sha-256``/``sha-512`` at 5000 rounds), median of
several runs. Entries: the bytes Python allocates per entry (tracemalloc) when each table is filled with
entries made from 6,000-character user names, the worst a client can send in one 8 KiB Authorization.
"""

from __future__ import annotations

import base64
import hashlib
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import bcrypt
from passlib.hash import apr_md5_crypt, sha256_crypt, sha512_crypt

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.allow_memo import AllowMemo  # noqa: E402
from app.credentials import User, hash_kind  # noqa: E402
from app.decision import Decision  # noqa: E402
from app.passwords import VerifiedCache, is_slow, verify_hash  # noqa: E402
from app.policy import ThrottleSettings  # noqa: E402
from app.shared_throttle.budget import KeyBudget  # noqa: E402
from app.shared_throttle.outbox import Outbox  # noqa: E402
from app.throttle import Throttle  # noqa: E402

PASSWORD = "correct horse battery"
LONG_NAME = 6000


def hashes() -> dict[str, str]:
    secret = PASSWORD.encode()
    return {
        "{SHA}": "{SHA}" + base64.b64encode(hashlib.sha1(secret).digest()).decode(),
        "apr1": apr_md5_crypt.hash(secret),
        "sha256-crypt (5000 rounds)": sha256_crypt.using(rounds=5000).hash(secret),  # type: ignore[no-untyped-call]
        "sha512-crypt (5000 rounds)": sha512_crypt.using(rounds=5000).hash(secret),  # type: ignore[no-untyped-call]
        "bcrypt cost 5": bcrypt.hashpw(secret, bcrypt.gensalt(5)).decode(),
        "bcrypt cost 10": bcrypt.hashpw(secret, bcrypt.gensalt(10)).decode(),
    }


def check_cost(user: User) -> float:
    """Median seconds of one verify_hash, over batches sized to take about 50 ms."""
    runs = 1
    while True:
        started = time.perf_counter()
        for _ in range(runs):
            assert verify_hash(user, PASSWORD)
        elapsed = time.perf_counter() - started
        if elapsed > 0.05:
            break
        runs *= 4
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(runs):
            verify_hash(user, PASSWORD)
        samples.append((time.perf_counter() - started) / runs)
    return statistics.median(samples)


def bytes_per_entry(fill: Callable[[int, str], None], count: int = 20_000) -> float:
    names = [f"{i:08d}" + "x" * (LONG_NAME - 8) for i in range(count)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, name in enumerate(names):
        fill(i, name)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / count


def main() -> None:
    print("hash kind                     one check    slow (checked off the loop, not under a name ban)")
    for label, hashed in hashes().items():
        kind = hash_kind(hashed)
        assert kind is not None
        user = User(name="u", hash=hashed, kind=kind)
        print(f"{label:28s} {check_cost(user) * 1e6:9.1f} us  {is_slow(user)}")

    big = ThrottleSettings(max_tracked=10**7, max_failures_per_user=10**6)
    throttle = Throttle(big)
    per_counter = bytes_per_entry(lambda i, name: throttle.record_failure(None, name))
    bans = Throttle(ThrottleSettings(max_tracked=10**7, max_failures_per_user=1))
    per_ban = bytes_per_entry(lambda i, name: bans.record_failure(None, name))
    outbox = Outbox(max_keys=10**7)
    per_outbox = bytes_per_entry(lambda i, name: outbox.add(throttle.key("user", name), 0.0))
    budget = KeyBudget(10**7, 60.0, 0.0, remembered=10**7)
    per_budget = bytes_per_entry(lambda i, name: budget.allows(throttle.key("user", name), 0.0))
    verified = VerifiedCache(10**7)
    per_verified = bytes_per_entry(lambda i, name: verified.add(User(name="u", hash="{SHA}x", kind="sha1"), name))
    memo = AllowMemo(max_entries=10**7)
    decision = Decision(200, "allowed", "basic", "p" * 128, rememberable=True)  # a principal of the longest name
    per_memo = bytes_per_entry(lambda i, name: memo.remember("api", ("Basic " + name).encode(), decision))
    print()
    print("table entry (6,000-character names)      bytes")
    for label, value in (
        ("throttle counter", per_counter),
        ("throttle ban", per_ban),
        ("shared throttle outbox", per_outbox),
        ("shared throttle key budget", per_budget),
        ("verified password", per_verified),
        ("allow memo (one rendered decision shared)", per_memo),
    ):
        print(f"{label:40s} {value:6.0f}")


if __name__ == "__main__":
    main()
