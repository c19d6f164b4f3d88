"""swiftlib.io: an interrupted atomic write leaves the previous file intact and no temporary files."""
import json
import os
import stat

import pytest
import torch

from swiftlib import io as sio


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("interrupted while serialising")


def test_interrupted_torch_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pth"
    sio.atomic_torch_save({"step": 1}, path)
    with pytest.raises(RuntimeError, match="interrupted"):
        sio.atomic_torch_save({"step": 2, "bad": _Unpicklable()}, path)
    assert torch.load(path) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]


def test_json_and_permissions(tmp_path):
    path = sio.atomic_write_json(tmp_path / "sub" / "r.json", {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
