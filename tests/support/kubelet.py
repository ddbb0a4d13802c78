"""A Secret directory laid out and updated exactly the way kubelet does it (REFERENCE §4).

Layout::

    DIR/..2026_11_22_06_00_00.123456789/tokens   the real files, in a timestamped directory
    DIR/..data -> ..2026_11_22_06_00_00.123456789
    DIR/tokens -> ..data/tokens                   one symlink per key

An update writes a new timestamped directory, points a ``..data_tmp`` symlink at it, renames
``..data_tmp`` over ``..data`` (the atomic step), fixes the per-key symlinks, then deletes the old
directory.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

Files = Mapping[str, str | bytes]


class KubeletSecretDir:
    """Writes and atomically swaps a Secret volume directory the way kubelet's AtomicWriter does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.mkdir(parents=True, exist_ok=True)
        self._counter = 0

    def _new_timestamped_dir(self) -> Path:
        self._counter += 1
        now = dt.datetime.now(dt.UTC)
        name = now.strftime("..%Y_%m_%d_%H_%M_%S.") + f"{now.microsecond:06d}{self._counter:03d}"
        ts_dir = self.path / name
        ts_dir.mkdir(mode=0o755)
        return ts_dir

    def write(self, files: Files) -> None:
        """Publishes a new version of the Secret (the first call creates it)."""
        data_link = self.path / "..data"
        old_target = os.readlink(data_link) if data_link.is_symlink() else None
        ts_dir = self._new_timestamped_dir()
        for key, content in files.items():
            payload = content.encode() if isinstance(content, str) else content
            (ts_dir / key).write_bytes(payload)
            (ts_dir / key).chmod(0o644)
        tmp_link = self.path / "..data_tmp"
        if tmp_link.is_symlink():
            tmp_link.unlink()
        os.symlink(ts_dir.name, tmp_link)
        os.rename(tmp_link, data_link)  # the atomic swap
        for key in files:
            key_link = self.path / key
            if not key_link.is_symlink():
                os.symlink(f"..data/{key}", key_link)
        # Keys that disappeared lose their symlink, as kubelet removes them.
        for entry in self.path.iterdir():
            if entry.name.startswith(".."):
                continue
            if entry.is_symlink() and entry.name not in files:
                entry.unlink()
        if old_target is not None:
            shutil.rmtree(self.path / old_target, ignore_errors=True)
