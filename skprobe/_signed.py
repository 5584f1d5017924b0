"""Pickles the package writes for itself and loads again only if their HMAC matches.

A joblib/pickle file runs code when it is loaded. The benchmark's fitted-probe
cache is written by skprobe and read back by later runs, so each file carries
an HMAC-SHA256 of its name and payload under a random key kept in the cache
folder (created once, readable by its owner only; a key found readable by
others is reported and made private again). A file that was replaced or
edited by anyone without the key is refused *before* unpickling, and so is a
signed file moved to another name: the name is the cache key, so two entries
renamed into each other's place do not pass. A plain digest next to the file
would not do: whoever can rewrite the file can rewrite the digest.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import secrets
import stat
import tempfile
import warnings
from pathlib import Path
from typing import Any

import joblib

from ._files import atomic_write

__all__ = ["dump_signed", "load_signed", "UntrustedFileError"]

_MAGIC = b"SKPROBE-HMAC-SHA256 v2\n"  # v2: the signature covers the file name too
_OLD_MAGIC = b"SKPROBE-HMAC-SHA256 v1\n"
_KEY_NAME = ".hmac-key"


class UntrustedFileError(ValueError):
    """A signed file whose signature is missing or does not match: it is not loaded."""


def _key(folder: Path) -> bytes:
    """The folder's signing key, created on first use (first writer wins, atomically)."""
    path = folder / _KEY_NAME
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{_KEY_NAME}.", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
                fh.flush()
                os.fsync(fh.fileno())
            # link() fails if another process created the key meanwhile: everyone then uses that one.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            Path(tmp).unlink(missing_ok=True)
    _keep_private(path)
    key = path.read_bytes()
    if len(key) != 32:
        raise UntrustedFileError(f"signing key {path} is damaged ({len(key)} bytes, expected 32); delete it "
                                 "and the files signed with it")
    return key


def _keep_private(path: Path) -> None:
    """Warn about a signing key that others may read, and restore mode 0600."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & 0o077:
        return
    try:
        os.chmod(path, 0o600)
        done = "its mode was set back to 0600"
    except OSError as exc:
        done = f"setting it back to 0600 failed ({exc.strerror or exc}): fix its permissions"
    warnings.warn(f"signing key {path} was readable by others (mode {mode:04o}); {done}. Anyone who could "
                  "read it can forge probe-cache entries: delete the folder's cache files if you do not trust "
                  "everyone who had access", UserWarning, stacklevel=3)


def _signature(key: bytes, name: str, payload: bytes) -> bytes:
    """HMAC-SHA256 (hex) of the file name and the payload: a signed file is valid under its own name only."""
    return hmac.new(key, name.encode() + b"\0" + payload, hashlib.sha256).hexdigest().encode()


def dump_signed(obj: Any, path: str | os.PathLike) -> Path:
    """Pickle ``obj`` with joblib into ``path`` (atomically), signed with the folder's key.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.joblib"
    >>> _ = dump_signed({"a": 1}, path)
    >>> load_signed(path)
    {'a': 1}
    """
    path = Path(path)
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    payload = buffer.getvalue()
    tag = _signature(_key(path.parent), path.name, payload)
    return atomic_write(path, lambda fh: fh.write(_MAGIC + tag + b"\n" + payload))


def load_signed(path: str | os.PathLike) -> Any:
    """Load a file written by :func:`dump_signed`, verifying its HMAC before unpickling anything.

    Raises
    ------
    UntrustedFileError
        If the file lacks the signature header or its name and payload do
        not match the signature under this folder's key (edited, replaced,
        renamed, signed with another data home's key, or by an skprobe
        whose signatures did not cover the name yet).
    """
    path = Path(path)
    data = path.read_bytes()
    head = len(_MAGIC) + 64 + 1
    if data.startswith(_OLD_MAGIC):
        raise UntrustedFileError(f"{path} was signed by an older skprobe whose signature does not cover the file "
                                 "name; it was not loaded")
    if not data.startswith(_MAGIC) or len(data) < head or data[head - 1 : head] != b"\n":
        raise UntrustedFileError(f"{path} is not a file signed by skprobe; it was not loaded")
    tag, payload = data[len(_MAGIC) : head - 1], data[head:]
    expected = _signature(_key(path.parent), path.name, payload)
    if not hmac.compare_digest(tag, expected):
        raise UntrustedFileError(f"{path} does not match its signature (modified, renamed, or written elsewhere); "
                                 "it was not loaded")
    return joblib.load(io.BytesIO(payload))
