"""Fetch the files of a Debian package without installing it.

Debian ships many freely licensed recordings inside data packages (drum kits,
game sound effects, spoken words). :func:`fetch_deb` downloads one package with
``apt-get download``, unpacks it into ``<data home>/debian/<package>/`` and
records its version and copyright file, so the data sets built from it can
state their licences. Nothing is installed and no root rights are needed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from .._config import data_home

__all__ = ["fetch_deb", "deb_info", "debian_home"]

_MARKER = ".skprobe-deb.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9+.\-]+$")
_NOT_FOUND = ("unable to locate package", "has no installation candidate", "can't select",
              "no packages found", "is not available")


def debian_home() -> Path:
    """Default folder of extracted packages: ``<data home>/debian``."""
    return data_home() / "debian"


def fetch_deb(package: str, dest: str | os.PathLike | None = None, *,
              include: Sequence[str] | None = None, deb_file: str | os.PathLike | None = None,
              force: bool = False, verbose: bool = False) -> Path:
    """Download a Debian package and unpack its files (no installation).

    Runs ``apt-get download`` (after ``apt-get update`` when the package index
    does not know the package; as a non-root user into a private index under
    ``dest``), then unpacks with ``dpkg -x``. The result is cached: a second
    call returns at once and needs no network. Unpacking goes to a temporary
    folder renamed into place, so an interrupted fetch leaves nothing behind.

    Parameters
    ----------
    package : str
        Debian package name, e.g. ``"sonic-pi-samples"``.
    dest : path-like, optional
        Folder holding the unpacked packages; default ``<data home>/debian``.
    include : sequence of str, optional
        Glob patterns (``fnmatch``, on paths such as ``usr/share/foo/*.ogg``)
        of the members to unpack; the copyright file is always kept. None
        unpacks everything. A filtered copy lives in its own folder
        ``<package>@<hash of the patterns>``.
    deb_file : path-like, optional
        Unpack this ``.deb`` instead of downloading (no apt needed).
    force : bool, default=False
        Fetch and unpack again even when cached.
    verbose : bool, default=False
        Print what is downloaded.

    Returns
    -------
    Path
        The package's root folder (holds ``usr/...``). :func:`deb_info` reads
        its version and copyright.

    Raises
    ------
    ValueError
        If ``package`` is not a valid Debian package name or ``deb_file`` is missing.
    RuntimeError
        If apt cannot download the package or the archive cannot be unpacked;
        the message holds apt's output.

    Examples
    --------
    >>> root = fetch_deb("bucklespring-data")  # doctest: +SKIP
    >>> deb_info(root)["version"]  # doctest: +SKIP
    '1.4.0-2'
    """
    if not isinstance(package, str) or not _NAME.match(package):
        raise ValueError(f"package must be a Debian package name (lowercase letters, digits, "
                         f"'+', '-', '.'), got {package!r}")
    dest = Path(dest) if dest is not None else debian_home()
    patterns = tuple(include) if include is not None else None
    root = dest / (package if patterns is None else f"{package}@{_pattern_hash(patterns)}")
    if (root / _MARKER).is_file() and not force:
        return root
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=f".{package}.tmp-") as tmp:
        tmp = Path(tmp)
        if deb_file is not None:
            deb = Path(deb_file)
            if not deb.is_file():
                raise ValueError(f"deb_file {deb} does not exist")
        else:
            deb = _apt_download(package, tmp / "download", dest / ".apt", verbose=verbose)
        out = tmp / "root"
        out.mkdir()
        _unpack(deb, out, patterns, package)
        fields = _control_fields(deb)
        if fields.get("Package", package) != package:
            raise ValueError(f"{deb} holds package {fields.get('Package')!r}, not {package!r}")
        copyright_rel = f"usr/share/doc/{package}/copyright"
        info = {
            "package": package,
            "version": fields.get("Version", "unknown"),
            "architecture": fields.get("Architecture", "unknown"),
            "deb_file": deb.name,
            "deb_size": deb.stat().st_size,
            "deb_sha256": _sha256(deb),
            "include": list(patterns) if patterns is not None else None,
            "copyright": copyright_rel if (out / copyright_rel).is_file() else None,
        }
        (out / _MARKER).write_text(json.dumps(info, indent=1))
        if root.exists():
            shutil.rmtree(root)
        os.replace(out, root)  # atomic: a half-unpacked folder is never visible under its name
    return root


def deb_info(root: str | os.PathLike) -> dict[str, Any]:
    """What :func:`fetch_deb` recorded about an unpacked package.

    Returns a dict with ``package``, ``version``, ``architecture``,
    ``deb_file``, ``deb_size``, ``deb_sha256``, ``include`` and
    ``copyright`` (path relative to ``root``, or None), plus
    ``copyright_text`` (the file's text, or None).
    """
    root = Path(root)
    marker = root / _MARKER
    if not marker.is_file():
        raise ValueError(f"{root} is not a folder unpacked by fetch_deb (no {_MARKER})")
    info = json.loads(marker.read_text())
    info["copyright_text"] = ((root / info["copyright"]).read_text(errors="replace")
                              if info.get("copyright") else None)
    return info


# -- download -------------------------------------------------------------------------------------

def _apt_download(package: str, folder: Path, private: Path, *, verbose: bool) -> Path:
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"apt-get not found: fetching {package!r} needs a Debian-based system; "
                           "download the .deb yourself and pass deb_file=<path>")
    folder.mkdir(parents=True)
    options = _apt_options(private) if _private_index_ready(private) else []
    proc = _run_apt(["download", package], folder, options, verbose)
    if proc.returncode != 0 and any(s in proc.stderr.lower() for s in _NOT_FOUND):
        options = _update_index(private, verbose)
        proc = _run_apt(["download", package], folder, options, verbose)
    debs = sorted(folder.glob("*.deb"))
    if proc.returncode != 0 or not debs:
        raise RuntimeError(f"`apt-get download {package}` failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return debs[0]


def _run_apt(args: list[str], cwd: Path, options: list[str], verbose: bool) -> subprocess.CompletedProcess:
    cmd = ["apt-get", "-q", *options, *args]
    if verbose:
        print("skprobe:", " ".join(cmd), file=sys.stderr)
    env = {**os.environ, "LC_ALL": "C"}  # stable English messages to match on
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)


def _update_index(private: Path, verbose: bool) -> list[str]:
    """Refresh the package index: the system's as root, else a private copy."""
    if os.geteuid() == 0:
        proc = _run_apt(["update"], Path.cwd(), [], verbose)
        options: list[str] = []
    else:
        for sub in ("lists/partial", "cache/archives/partial"):
            (private / sub).mkdir(parents=True, exist_ok=True)
        options = _apt_options(private)
        proc = _run_apt(["update"], Path.cwd(), options, verbose)
    if proc.returncode != 0:
        raise RuntimeError(f"`apt-get update` failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    if options:
        (private / "ready").write_text("apt index for non-root downloads\n")
    return options


def _apt_options(private: Path) -> list[str]:
    return ["-o", f"Dir::State::Lists={private / 'lists'}", "-o", f"Dir::Cache={private / 'cache'}",
            "-o", "Debug::NoLocking=1"]


def _private_index_ready(private: Path) -> bool:
    return os.geteuid() != 0 and (private / "ready").is_file()


# -- unpacking ------------------------------------------------------------------------------------

def _unpack(deb: Path, out: Path, patterns: tuple[str, ...] | None, package: str) -> None:
    if patterns is None and shutil.which("dpkg-deb"):
        proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"`dpkg-deb -x {deb}` failed:\n{proc.stderr[-2000:]}")
        return
    keep = None if patterns is None else (*patterns, f"usr/share/doc/{package}/copyright")
    with _data_tar(deb) as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if not (member.isfile() or member.isdir()):
                continue  # links and devices are not needed for data
            if keep is not None and not (member.isfile() and any(fnmatch.fnmatch(name, p) for p in keep)):
                continue
            member.name = name
            _extract(tar, member, out)


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, out: Path) -> None:
    if hasattr(tarfile, "data_filter"):
        tar.extract(member, out, filter="data")  # refuses absolute paths, '..' and odd modes
        return
    if member.name.startswith("/") or ".." in Path(member.name).parts:
        raise RuntimeError(f"refusing to unpack {member.name!r}: path leaves the target folder")
    tar.extract(member, out)


class _data_tar:
    """Context manager streaming the data archive of a ``.deb`` as a tarfile."""

    def __init__(self, deb: Path):
        self.deb = deb
        self._proc: subprocess.Popen | None = None
        self._file: IO[bytes] | None = None

    def __enter__(self) -> tarfile.TarFile:
        if shutil.which("dpkg-deb"):  # handles every compression, zstd included
            self._proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(self.deb)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self._tar = tarfile.open(fileobj=self._proc.stdout, mode="r|")
        else:
            name, offset, size = _ar_member(self.deb, "data.tar")
            self._file = open(self.deb, "rb")
            self._file.seek(offset)
            comp = name.rsplit(".", 1)[-1] if name != "data.tar" else ""
            if comp not in ("", "gz", "xz", "bz2"):
                raise RuntimeError(f"{self.deb}: {name} needs dpkg-deb to unpack (compression {comp!r})")
            self._tar = tarfile.open(fileobj=io.BufferedReader(_Slice(self._file, size)),
                                     mode=f"r|{comp}" if comp else "r|")
        return self._tar

    def __exit__(self, *exc) -> None:
        self._tar.close()
        if self._file is not None:
            self._file.close()
        if self._proc is not None:
            self._proc.stdout.close()
            err = self._proc.stderr.read().decode(errors="replace")
            if self._proc.wait() != 0 and exc[0] is None:
                raise RuntimeError(f"`dpkg-deb --fsys-tarfile {self.deb}` failed:\n{err[-2000:]}")


class _Slice(io.RawIOBase):
    """Read at most ``size`` bytes from the current position of a file."""

    def __init__(self, f: IO[bytes], size: int):
        self.f, self.left = f, size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.f.read(min(len(b), self.left))
        self.left -= len(data)
        b[:len(data)] = data
        return len(data)


def _ar_member(deb: Path, prefix: str) -> tuple[str, int, int]:
    """Name, offset and size of the first member of an ``ar`` archive starting with ``prefix``."""
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise RuntimeError(f"{deb} is not a Debian package (no ar header)")
        while header := f.read(60):
            if len(header) < 60:
                break
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            if name.startswith(prefix):
                return name, f.tell(), size
            f.seek(size + size % 2, os.SEEK_CUR)
    raise RuntimeError(f"{deb} has no {prefix}* member")


def _control_fields(deb: Path) -> dict[str, str]:
    if shutil.which("dpkg-deb"):
        proc = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True)
        text = proc.stdout if proc.returncode == 0 else ""
    else:
        name, offset, size = _ar_member(deb, "control.tar")
        with open(deb, "rb") as f:
            f.seek(offset)
            with tarfile.open(fileobj=io.BytesIO(f.read(size)), mode="r:*") as tar:
                member = next(m for m in tar if m.name.lstrip("./") == "control")
                text = tar.extractfile(member).read().decode(errors="replace")
    fields = {}
    for line in text.splitlines():
        if line and not line[0].isspace() and ":" in line:
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    return fields


def _pattern_hash(patterns: tuple[str, ...]) -> str:
    return hashlib.sha1("\n".join(patterns).encode()).hexdigest()[:10]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
