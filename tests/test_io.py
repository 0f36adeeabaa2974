"""core.io: atomic writes keep nothing half-written; torch files fail with one clear error."""

import hashlib
import os

import pytest
import torch

from core import io


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    io.atomic_write_bytes(target, b"old")

    def broken(p):
        p.write_bytes(b"partial")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        io.atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_write_has_the_usual_mode(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    p = io.atomic_write_text(tmp_path / "a.txt", "x")
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask


def test_torch_load_errors_name_the_file(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"a": torch.ones(2)}, good)
    assert torch.equal(io.torch_load(good, "thing", ValueError)["a"], torch.ones(2))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"bad.pt: not a readable thing \(truncated"):
        io.torch_load(bad, "thing", ValueError)
    with pytest.raises(ValueError, match="nope.pt: thing not found"):
        io.torch_load(tmp_path / "nope.pt", "thing", ValueError)


def test_atomic_torch_save_bytes_do_not_depend_on_the_file(tmp_path):
    obj = {"w": torch.arange(6.0).reshape(2, 3), "meta": {"step": 3}}
    a = io.atomic_torch_save(obj, tmp_path / "a.pt")
    b = io.atomic_torch_save(obj, tmp_path / "sub" / "b.pt")
    assert a.read_bytes() == b.read_bytes() == io.torch_bytes(obj)
    assert torch.equal(io.torch_load(b, "thing", ValueError)["w"], obj["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "sub"]
    assert io.file_sha256(a) == hashlib.sha256(a.read_bytes()).hexdigest()
