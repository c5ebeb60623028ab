"""Writes tests/data/torchvision_layout.json from real torchvision (run it where torchvision imports):
`python tests/data/torchvision_fixture.py`. For each architecture: every state_dict key with its shape, and the
logits of torchvision's own model for two fixed 64x64 images under fixed, formula-made weights (`fill`), which
tests/test_zoo.py compares with landscape.models.imagenet's stand-ins, without torchvision."""
import json
import math
import sys
from pathlib import Path

import torch

ARCHS = ("resnet18", "resnet50", "densenet121")


def fill(state: dict) -> dict:
    """Deterministic weights from the keys' order alone (no RNG): small waves, variances positive."""
    out = {}
    for i, (k, v) in enumerate(state.items()):
        if not v.is_floating_point():
            out[k] = v
            continue
        x = torch.arange(v.numel(), dtype=torch.float64).reshape(v.shape)
        w = torch.sin(0.37 * x + i)
        if k.endswith("running_var"):
            w = 1.0 + 0.5 * w.abs()
        elif k.endswith("weight") and v.dim() > 1:
            w = w * math.sqrt(2.0 / (v[0].numel()))
        else:
            w = 0.1 * w + (1.0 if k.endswith("weight") and v.dim() == 1 else 0.0)
        out[k] = w.to(v.dtype)
    return out


def images() -> torch.Tensor:
    x = torch.arange(2 * 3 * 64 * 64, dtype=torch.float64).reshape(2, 3, 64, 64)
    return torch.cos(0.013 * x).float()


def main() -> None:
    import torchvision

    out = {"torchvision": torchvision.__version__, "torch": torch.__version__, "archs": {}}
    for arch in ARCHS:
        model = torchvision.models.get_model(arch, weights=None).eval()
        state = model.state_dict()
        model.load_state_dict(fill(state))
        with torch.no_grad():
            logits = model(images())
        out["archs"][arch] = {"keys": [[k, list(v.shape)] for k, v in state.items()],
                              "logits": [[round(float(v), 6) for v in row[:50]] for row in logits]}
    Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("torchvision_layout.json")).write_text(
        json.dumps(out))


if __name__ == "__main__":
    main()
