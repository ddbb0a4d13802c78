"""Everything that talks to the Kubernetes API: the client and the Secret's read and edit (``api``), watch
mode's Secret watch (``watch``; its retry policy in ``retry``, what an event applies in ``feed``, its
thread in ``worker``), and the token CLI (``cli``; its text edits in ``tokens``).

Only the CLI and watch mode import this package, and this file imports nothing: the Kubernetes client
(~30 MB, a second to import) is loaded by ``api`` and ``watch`` alone, so ``authgate serve`` in its default
file mode never loads it.
"""
