"""fetch_deb on a locally built .deb (no network), plus one real download."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from skprobe.packages import debian
from skprobe.packages.debian import deb_info, fetch_deb

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb to build a test .deb")


@pytest.fixture(scope="module", params=["xz", "gzip"])
def fake_deb(request, tmp_path_factory):
    if shutil.which("dpkg-deb") is None:
        pytest.skip("needs dpkg-deb to build a test .deb")
    root = tmp_path_factory.mktemp("build") / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        "Package: skprobe-fake-data\nVersion: 1.2-3\nArchitecture: all\n"
        "Maintainer: nobody <nobody@example.org>\nDescription: test data\n")
    doc = root / "usr/share/doc/skprobe-fake-data"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("License: CC0-1.0\n")
    data = root / "usr/share/fake"
    (data / "sub").mkdir(parents=True)
    (data / "a.ogg").write_bytes(b"ogg")
    (data / "sub/b.wav").write_bytes(b"wav")
    (data / "notes.txt").write_text("text")
    deb = root.parent / f"fake-{request.param}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{request.param}", "--build", str(root), str(deb)],
                   check=True, capture_output=True)
    return deb


def test_unpacks_and_records_version_and_copyright(fake_deb, tmp_path):
    root = fetch_deb("skprobe-fake-data", tmp_path, deb_file=fake_deb)
    assert root == tmp_path / "skprobe-fake-data"
    assert (root / "usr/share/fake/sub/b.wav").read_bytes() == b"wav"
    info = deb_info(root)
    assert info["version"] == "1.2-3" and info["architecture"] == "all"
    assert info["copyright"] == "usr/share/doc/skprobe-fake-data/copyright"
    assert info["copyright_text"] == "License: CC0-1.0\n"
    assert len(info["deb_sha256"]) == 64 and info["include"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["skprobe-fake-data"]  # no temporary left


def test_cached_second_call_does_not_unpack_again(fake_deb, tmp_path, monkeypatch):
    root = fetch_deb("skprobe-fake-data", tmp_path, deb_file=fake_deb)
    monkeypatch.setattr(debian, "_unpack", lambda *a: pytest.fail("unpacked again"))
    assert fetch_deb("skprobe-fake-data", tmp_path, deb_file=fake_deb) == root
    assert fetch_deb("skprobe-fake-data", tmp_path) == root  # no apt needed either


def test_include_patterns_keep_matching_members_and_the_copyright(fake_deb, tmp_path):
    root = fetch_deb("skprobe-fake-data", tmp_path, deb_file=fake_deb, include=["usr/share/fake/*.wav"])
    assert root.name.startswith("skprobe-fake-data@")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == [".skprobe-deb.json", "usr/share/doc/skprobe-fake-data/copyright", "usr/share/fake/sub/b.wav"]
    assert deb_info(root)["include"] == ["usr/share/fake/*.wav"]


def test_pure_python_unpacking_without_dpkg(fake_deb, tmp_path, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(debian.shutil, "which", lambda name: None if name.startswith("dpkg") else real_which(name))
    root = fetch_deb("skprobe-fake-data", tmp_path, deb_file=fake_deb)
    assert (root / "usr/share/fake/a.ogg").read_bytes() == b"ogg"
    assert deb_info(root)["version"] == "1.2-3"


def test_wrong_package_in_deb_file(fake_deb, tmp_path):
    with pytest.raises(ValueError, match="holds package 'skprobe-fake-data', not 'other-pkg'"):
        fetch_deb("other-pkg", tmp_path, deb_file=fake_deb)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["Bad_Name", "-x", "a b", "../etc", ""])
def test_invalid_package_names(name, tmp_path):
    with pytest.raises(ValueError, match="package must be a Debian package name"):
        fetch_deb(name, tmp_path)


def test_missing_deb_file_and_missing_apt(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="deb_file .*nope.deb does not exist"):
        fetch_deb("some-pkg", tmp_path, deb_file=tmp_path / "nope.deb")
    monkeypatch.setattr(debian.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get not found.*deb_file="):
        fetch_deb("some-pkg", tmp_path)


def test_not_a_fetched_folder(tmp_path):
    with pytest.raises(ValueError, match="not a folder unpacked by fetch_deb"):
        deb_info(tmp_path)


def test_not_a_deb(tmp_path, monkeypatch):
    fake = tmp_path / "x.deb"
    fake.write_bytes(b"garbage")
    monkeypatch.setattr(debian.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="not a Debian package"):
        fetch_deb("x-pkg", tmp_path / "out", deb_file=fake)


@pytest.mark.network
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get")
def test_real_download():
    root = fetch_deb("bucklespring-data")  # 2.6 MB, cached under ~/.cache/skprobe/debian
    info = deb_info(root)
    assert info["package"] == "bucklespring-data" and info["version"]
    assert "GPL" in info["copyright_text"]
    assert len(list((root / "usr/share/buckle/wav").glob("*.wav"))) > 100


@pytest.mark.parametrize("euid", [0, 1000])
def test_missing_index_triggers_update(fake_deb, tmp_path, monkeypatch, euid):
    """Root refreshes the system index; other users get a private one under ``dest/.apt``."""
    calls = []

    def fake_apt(args, cwd, options, verbose):
        calls.append((args[0], list(options)))
        if args[0] == "download" and len(calls) == 1:
            return subprocess.CompletedProcess(args, 100, "", "E: Unable to locate package skprobe-fake-data")
        if args[0] == "download":
            shutil.copy(fake_deb, cwd / fake_deb.name)
        return subprocess.CompletedProcess(args, 0, "", "")

    real_which = shutil.which
    monkeypatch.setattr(debian.os, "geteuid", lambda: euid)
    monkeypatch.setattr(debian.shutil, "which", lambda name: f"/usr/bin/{name}" if name == "apt-get"
                        else real_which(name))
    monkeypatch.setattr(debian, "_run_apt", fake_apt)
    root = fetch_deb("skprobe-fake-data", tmp_path)
    assert deb_info(root)["version"] == "1.2-3"
    assert [c[0] for c in calls] == ["download", "update", "download"]
    private = [] if euid == 0 else debian._apt_options(tmp_path / ".apt")
    assert calls[1][1] == private and calls[2][1] == private
    if euid:
        assert (tmp_path / ".apt/lists/partial").is_dir() and (tmp_path / ".apt/ready").is_file()
