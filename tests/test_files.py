"""``atomic_write``: the one helper behind every file the package writes for itself."""

import os
import threading

import pytest

from skprobe._files import atomic_write


def test_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write(path, lambda fh: fh.write(b"old"))

    def interrupted(fh):
        fh.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_concurrent_writers_each_leave_a_complete_file(tmp_path):
    path = tmp_path / "out.bin"
    contents = [bytes([i]) * 100_000 for i in range(8)]
    threads = [threading.Thread(target=lambda c=c: [atomic_write(path, lambda fh: fh.write(c)) for _ in range(10)])
               for c in contents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert path.read_bytes() in contents
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_file_respects_the_umask(tmp_path, umask, expected):
    """Like ``open()``: mode 0666 filtered by the process's umask (not 0644 whatever the umask)."""
    previous = os.umask(umask)
    try:
        path = atomic_write(tmp_path / "x", lambda fh: fh.write(b"1"))
        replaced = atomic_write(path, lambda fh: fh.write(b"2"))  # replacing a file: the same rule
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == expected
    assert replaced.read_bytes() == b"2" and replaced.stat().st_mode & 0o777 == expected
