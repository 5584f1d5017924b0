"""What identifies an encoder's weights: the id that token caches and stores are keyed on.

Weights come from a checkpoint file (or folder), identified by its SHA-256,
or, for encoders whose builder makes them (seeded random weights, a user's
own code), from the built module, identified by a hash of its state dict.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["checkpoint_fingerprint", "file_sha256", "weights_id"]

#: SHA-256 of checkpoint files already hashed in this process, keyed by :func:`checkpoint_fingerprint`.
_FILE_HASHES: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, or of every file below a folder (sorted by path, names included).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
    >>> _ = p.write_bytes(b"abc")
    >>> file_sha256(p)[:16]
    'ba7816bf8f01cfea'
    """
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                digest.update(block)
    return digest.hexdigest()


def checkpoint_fingerprint(path: str | os.PathLike) -> tuple:
    """Path, size and modification time of a checkpoint file, or of every file below a checkpoint folder.

    Cheap to compute; it changes when a file is rewritten (a folder's own
    modification time does not change when a file inside is rewritten in
    place, so the files are listed).
    """
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return tuple((str(f), st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()])


def weights_id(checkpoint: str | os.PathLike | None = None, module: nn.Module | None = None) -> str:
    """The id of an encoder's weights: the checkpoint's SHA-256, or a hash of the built module's state dict.

    Parameters
    ----------
    checkpoint : path-like, optional
        The checkpoint file or folder the weights are read from. Hashed once
        per file version in a process (path, size and modification time).
    module : torch.nn.Module, optional
        The built encoder, for encoders without a checkpoint: the names,
        shapes, dtypes and bytes of its state dict are hashed (once per
        module; the id is kept on it). Pass exactly one of the two.

    Returns
    -------
    str
        64 hex digits for a checkpoint, ``"state-"`` and 64 hex digits for
        a module.

    Examples
    --------
    >>> import torch
    >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> weights_id(module=a) == weights_id(module=a), weights_id(module=a) == weights_id(module=b)
    (True, False)
    """
    if (checkpoint is None) == (module is None):
        raise ValueError("weights_id needs exactly one of checkpoint and module")
    if checkpoint is not None:
        path = Path(checkpoint)
        key = (str(path.resolve()), checkpoint_fingerprint(path))
        if key not in _FILE_HASHES:
            _FILE_HASHES[key] = file_sha256(path)
        return _FILE_HASHES[key]
    cached = getattr(module, "_skprobe_weights_hash", None)  # on the module: ids of freed modules recur
    if cached is None:
        digest = hashlib.sha256()
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            if tensor.numel():
                digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        cached = "state-" + digest.hexdigest()
        module._skprobe_weights_hash = cached
    return cached
