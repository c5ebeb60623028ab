"""Writes tests/data/torchvision_layout.json from real torchvision (run it where torchvision imports):
`python tests/data/torchvision_fixture.py`. For each architecture: every state_dict key with its shape, and the
logits of torchvision's own model for two fixed 64x64 images under fixed, formula-made weights (`fill`), which
tests/test_zoo.py compares with landscape.models.imagenet's stand-ins, without torchvision.

`PYTHONPATH=. python tests/data/torchvision_fixture.py --compare` checks every stand-in against torchvision
directly: the same keys in the same order and shapes, and the largest logit difference on random images with
torchvision's random weights and randomised BatchNorm statistics loaded into both."""
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


def compare() -> None:
    import torchvision

    from landscape.models.imagenet import ARCHS as STAND_INS

    torch.manual_seed(0)
    for arch, build in STAND_INS.items():
        theirs, ours = torchvision.models.get_model(arch, weights=None).eval(), build().eval()
        state = theirs.state_dict()
        same = [[k, v.shape] for k, v in state.items()] == [[k, v.shape] for k, v in ours.state_dict().items()]
        for k, v in state.items():
            if k.endswith("running_var"):
                v.uniform_(0.5, 2.0)
            elif k.endswith("running_mean"):
                v.normal_(0.0, 0.1)
        ours.load_state_dict(state)
        x = torch.randn(2, 3, 96, 96)
        with torch.no_grad():
            diff = (theirs(x) - ours(x)).abs().max().item()
        print(f"{arch}: {len(state)} tensors, same keys and shapes: {same}, max |logit difference|: {diff}")


def main() -> None:
    if sys.argv[1:] == ["--compare"]:
        return compare()
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
    Path(__file__).with_name("torchvision_layout.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main()
