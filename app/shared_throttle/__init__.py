"""Throttling that holds across replicas: failure counters and bans shared through Redis.

Without it every replica counts alone, so with N pods a guesser gets N times the limit, and a client banned
on one pod may try on the next. The local :class:`~app.throttle.Throttle` stays the one that decides: the
decision is synchronous, runs on the event loop, and must never wait on the network. This package keeps it in
step with the other replicas in the background, one job per module:

* ``throttle`` — :class:`SharedThrottle`, the local throttle with the parts below wired around it, and
  :func:`make_throttle`, which builds it when the policy names a Redis. **Allows never touch Redis**, and no
  answer waits for it: the decision reads only the local table.
* ``outbox`` — **failures out**: each failure the local throttle counts also goes into a bounded outbox that
  coalesces per key (O(1) under a lock, from the event loop or a worker thread).
* ``push`` — one task drains the outbox: one atomic Lua script call per batch adds each key's failures to its
  counter in Redis, which expires with the window; at the limit it records a ban in one sorted set of live
  bans (scored by expiry) and publishes it. A ban this replica imposed itself is pushed too, so a client
  banned here while Redis was down is banned everywhere once Redis is back.
* ``ban_sync`` — **bans in**: every replica subscribes to the bans channel and imposes each ban locally for the
  time it has left: a ban reached with failures split across replicas holds on all of them one Redis round
  trip and one pub/sub delivery after the failure that reached it was answered. A replica that (re)connects
  first subscribes, then reads the live bans from the sorted set, so none published while it was starting or
  disconnected is missed; the script's answer also carries the key's ban, if any.
* ``connection`` — Redis down, slow or refusing (connection refused, a timeout, an error answer): the local
  throttle keeps counting as before (per replica: the limit then holds per pod, not for the fleet),
  ``authgate_throttle_shared`` says 0, errors are counted and logged at most once a minute, and the client
  reconnects with jittered exponential backoff. Never fail open: a ban or a count is only ever added from
  Redis, never waited for or lifted.
* ``password`` — the Redis password, and the key of the digests every replica counts under.
* ``budget`` — the key budget: how many counters this replica may create in Redis.

What Redis holds. Nothing a client sent: every counter name, ban member and published ban carries the
keyed digest the local table counts under (app.throttle, 16 bytes, hex), never the address or user name, so an
entry costs the same whatever a client sends, and a flood of 6,000-character names grows no replica. The
replicas must derive the same digest for the same name, so the key is derived (:func:`shared_digest_key`)
from what they all share: ``key_prefix`` and, when set, the Redis password. With a password, a reader of
Redis's data (a dump, a backup, a replica of it) who lacks the password cannot test a guessed name or address
against it; without one, anyone who can read it can (as anyone who can read it can also write bans).

Bounds. In Redis every counter expires within ``window_seconds`` of its first failure; the set of bans expires
when its longest ban does, and each write drops the bans that have ended. Counter keys are that digest under
``key_prefix``; a replica creates at most ``max_tracked`` new counter
keys per window (a token bucket; a key it created within the window costs nothing more; failures past the
budget are counted locally only), so however many names a guesser invents, Redis holds at most about
``max_tracked`` counters per replica, like the local table. The outbox holds at most ``MAX_PENDING_KEYS``
keys; failures older than the window when their turn comes (Redis was down) are dropped rather than counted in
a fresh window. The script touches a counter and the one set of bans: a standalone Redis (or the primary
behind a Sentinel-managed Service), not Redis Cluster.

Every module here imports redis only inside the functions that talk to it: a process whose policy names no
Redis never loads the client.
"""

from app.shared_throttle.password import redis_password, shared_digest_key
from app.shared_throttle.throttle import SharedThrottle, make_throttle

__all__ = ["SharedThrottle", "make_throttle", "redis_password", "shared_digest_key"]
