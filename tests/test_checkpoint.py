"""A checkpoint that cannot be loaded is one line saying what the file is, never torch's unsafe advice."""
import json
import pickle

import numpy as np
import pytest
import torch

from landscape.checkpoint import load_state
from landscape.errors import UserError, first_line


def _write(tmp_path, kind):
    path = tmp_path / {"json": "x.json", "directory": "d", "pickle": "p.pkl"}.get(kind, f"{kind}.pt")
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.arange(100, dtype=np.uint8).tobytes())
    elif kind == "text":
        path.write_text("hello\n")
    elif kind == "json":
        path.write_text(json.dumps({"weight": [1, 2]}))
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    elif kind == "truncated":
        torch.save({"w": torch.zeros(100)}, path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "whole module":
        torch.save(torch.nn.Linear(2, 2), path)
    elif kind == "directory":
        path.mkdir()
    return path


CASES = {
    "empty": "is empty (0 bytes)",
    "garbage": "is not a PyTorch checkpoint, or a damaged one (torch.load failed: UnpicklingError: Unsupported operand",
    "text": "is not a PyTorch checkpoint, or a damaged one (torch.load failed: KeyError",
    "json": "is not a PyTorch checkpoint, or a damaged one (torch.load failed: UnpicklingError: Unsupported operand 123)",
    "pickle": "is not a PyTorch checkpoint",
    "truncated": "failed reading zip archive",
    "whole module": "holds Python objects besides tensors (torch.nn.modules.linear.Linear; a whole pickled model?)",
    "directory": "is a directory; give a .pt file",
}


@pytest.mark.parametrize("kind", list(CASES))
def test_unloadable_checkpoint_is_one_clear_line(kind, tmp_path, recwarn):
    path = _write(tmp_path, kind)
    with pytest.raises(UserError) as info:
        load_state(path)
    message = str(info.value)
    assert message.startswith(f"checkpoint {path} ") and CASES[kind] in message, message
    assert "\n" not in message and "weights_only" not in message
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]  # nothing else on stderr


def test_first_line_of_an_empty_message_is_the_type_name():
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(ValueError("\n  one\ntwo"), 2) == "on"
