"""Claims: the clip keys each live writer is computing, so concurrent writers split the work.

A writer holds an exclusive ``flock`` on ``claims/<writer id>.lock`` for as long
as it lives and lists its clip keys in ``claims/<writer id>.json`` (rewritten
atomically for every batch). Another writer honours a claim while that lock
is held: the kernel (or the NFS server, which maps ``flock`` to POSIX locks)
releases it when the process dies, whatever happens to its process id
afterwards. A claim not renewed for ``timeout`` seconds is not honoured either
(a hung writer); that is said in a warning naming the claim file. Claim files
of earlier versions (no lock file) count as live while their process id runs
on this host, or for ``timeout`` seconds on another host; malformed claim
files are ignored with a warning.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..._files import atomic_write

__all__ = ["Claims", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 600.0
_LOCK_NAME = re.compile(r"^[0-9A-Za-z_-]{1,100}\.lock$")
_HEX_KEY = re.compile(r"^[0-9a-f]{64}$")
_LIVE_IN_PROCESS: set[str] = set()  # writers of this process (POSIX locks do not conflict within one process)
_WARNED: set[tuple[str, float]] = set()
os.register_at_fork(after_in_child=_LIVE_IN_PROCESS.clear)  # a forked child is not the parent's writer


def _warn_once(path: Path, mtime: float, message: str) -> None:
    if (str(path), mtime) not in _WARNED:
        _WARNED.add((str(path), mtime))
        warnings.warn(message, stacklevel=4)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    return True


def lock_held(path: Path) -> bool:
    """Whether some process holds a lock on ``path`` (False when the file is missing)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: honour the claim (the timeout still bounds it)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _parse(payload: str) -> dict | None:
    """A claim's content, or None when it is not one (then it is ignored)."""
    try:
        claim = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(claim, dict) or not isinstance(claim.get("keys"), list):
        return None
    if not all(isinstance(k, str) and _HEX_KEY.match(k) for k in claim["keys"]):
        return None
    if not isinstance(claim.get("host"), str) or type(claim.get("pid")) is not int:
        return None
    lock = claim.get("lock")
    if lock is not None and not (isinstance(lock, str) and _LOCK_NAME.match(lock)):
        return None
    return claim


class Claims:
    """The claims folder of a store, as seen by the writer ``writer_id``."""

    def __init__(self, folder: Path, writer_id: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.folder = Path(folder)
        self.id = writer_id
        self.timeout = timeout
        self._lock_fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / f"{self.id}.json"

    def _hold_lock(self) -> None:
        if self._lock_fd is None:
            fd = os.open(self.folder / f"{self.id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise
            self._lock_fd = fd
            _LIVE_IN_PROCESS.add(self.id)

    def write(self, keys: Sequence[str]) -> None:
        """Claim ``keys`` (replacing this writer's previous claim)."""
        self._hold_lock()
        payload = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "lock": f"{self.id}.lock",
                              "keys": list(keys)}).encode()
        atomic_write(self.path, lambda fh: fh.write(payload))

    def others(self) -> set[bytes]:
        """Keys claimed by other live writers."""
        claimed: set[bytes] = set()
        host = socket.gethostname()
        now = time.time()
        for path in self.folder.glob("*.json"):
            if path.stem == self.id:
                continue
            try:
                payload = path.read_text()
                mtime = path.stat().st_mtime
            except (OSError, UnicodeDecodeError):
                continue  # removed meanwhile, or unreadable
            claim = _parse(payload)
            if claim is None:
                _warn_once(path, mtime, f"ignoring {path}: not a claim file of a token store writer (expected "
                                        "JSON with host, pid and keys)")
                continue
            if self._alive(path, claim, host, now - mtime, mtime):
                claimed.update(bytes.fromhex(k) for k in claim["keys"])
        return claimed

    def _alive(self, path: Path, claim: dict, host: str, age: float, mtime: float) -> bool:
        if path.stem in _LIVE_IN_PROCESS:
            return True
        if claim.get("lock") is not None:
            alive = lock_held(self.folder / claim["lock"])
            if not alive:  # its writer died: clear what it left
                for leftover in (path, self.folder / claim["lock"]):
                    try:
                        leftover.unlink(missing_ok=True)
                    except OSError:
                        pass
        else:  # a claim of an earlier version: its process id, on this host
            alive = _pid_alive(claim["pid"]) if claim["host"] == host else True
        if alive and age > self.timeout:
            _warn_once(path, mtime, f"{path}: writer {path.stem} (host {claim['host']}, pid {claim['pid']}) has "
                                    f"not renewed its claim on {len(claim['keys'])} clip(s) for {age:.0f} s (more "
                                    f"than {self.timeout:g} s); computing them here. Delete that file if its "
                                    "writer is gone")
            return False
        return alive

    def close(self) -> None:
        """Drop this writer's claim and its lock."""
        for path in (self.path, self.folder / f"{self.id}.lock"):
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
            _LIVE_IN_PROCESS.discard(self.id)
