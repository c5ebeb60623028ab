"""PROJECTED time of every thesis preset (conf/experiment/thesis/) on one GPU, from rates measured on one:
`python -m bench.thesis [bench/recorded/gpu-*.json]` prints the README's table.

time = points x samples x forward FLOPs per sample / achieved FLOP/s, where FLOPs are counted here
(torch's FlopCounterMode, on the meta device: nothing is allocated) and the achieved rate is the one the
recorded benchmark measured for the same kind of network: a convnet gets ResNet-56's, an MLP the 3x9000
MLP's (fp32 eager and bf16 rows), and a convnet on 224x224 images (data=imagefolder) the rate of ResNet-50 at
224x224 where the JSON has that part (`resnet50_224`: its fp32 eager row and its fastest bf16 row), else
ResNet-56's. A projection, not a measurement, except imagenet_resnet50 with a `resnet50_224` rate: the same
network on images of the same shape, scaled per sample (setup, copy and decode left out; bench.gpu's own
ImageNet projection adds them); other convnets use the GPU differently (ResNet-50 at 224x224 has wider, more
compute-bound layers than ResNet-56 at 32x32).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from landscape.spec import instantiate

CONF = Path(__file__).resolve().parent.parent / "conf"
RECORDED = Path(__file__).resolve().parent / "recorded" / "gpu-h200-20261126.json"
# What each data group stands for in the thesis: input shape, samples evaluated, and the sizes models take.
DATA = {
    "cifar10": ((3, 32, 32), 50_000, {"num_classes": 10, "in_channels": 3}),
    "tensors": ((942,), 52_407, {"in_features": 942, "out_features": 4759}),  # D-GEX (GEO): 942 -> 4759
    "imagefolder": ((3, 224, 224), 50_000, {"num_classes": 1000, "in_channels": 3}),  # ImageNet validation
}
# The thesis's 6.11 table: preset -> (surface time, GPUs or CPU machines); None: not a row of that table.
THESIS = {
    "taaf_prep_pca_271": ("22h 22m", "7 x 8 CPUs"), "taaf_prep_pca_811": ("26h 38m", "7 x 8 CPUs"),
    "taaf_3x6000_pca": ("17h 12m", "10 GPUs"), "taaf_3x6000": ("18h 01m", "10 GPUs"),
    "taaf_3x9000_pca": ("19h 33m", "10 GPUs"), "taaf_3x9000": ("19h 37m", "10 GPUs"),
    "resnet50_pca": ("12h 53m", "10 GPUs"), "resnet50_noskip_pca": ("13h 01m", "10 GPUs"),
    "resnet50": ("15h 11m", "10 GPUs"), "resnet50_300": ("16h 03m", "20 GPUs"),
    "resnet50_noskip": ("15h 11m", "10 GPUs"), "resnet50_noskip_300": ("16h 03m", "20 GPUs"),
    "resnet56": ("11h 52m", "10 GPUs"), "resnet56_noskip": ("11h 55m", "10 GPUs"),
    "resnet110": ("12h 02m", "20 GPUs"), "resnet110_300": ("18h 02m", "20 GPUs"),
    "resnet110_noskip": ("12h 03m", "20 GPUs"), "resnet110_noskip_300": ("18h 03m", "20 GPUs"),
    "densenet_cifar_pca": ("13h 44m", "20 GPUs"),
    "imagenet_resnet50": ("23h (6.6)", "20 GPUs"), "imagenet_densenet121": ("21h 37m (6.6)", "20 GPUs"),
}


def preset(name: str) -> tuple[dict, str, int]:
    """A surface preset's model spec (sizes filled in from DATA), its data group, and its points."""
    text = yaml.safe_load((CONF / "experiment" / "thesis" / f"{name}.yaml").read_text())
    groups = dict(next(iter(d.items())) for d in text["defaults"])
    model = yaml.safe_load((CONF / "model" / f"{groups['override /model']}.yaml").read_text())
    data = groups["override /data"]
    spec = {**model, **text.get("model", {})}
    spec = {k: DATA[data][2][v[7:-1]] if isinstance(v, str) and v.startswith("${data.") else v
            for k, v in spec.items()}
    return spec, data, int(text["grid"]["resolution"]) ** 2


def flops_per_sample(spec: dict, shape: tuple[int, ...]) -> float:
    with torch.device("meta"):
        model = instantiate(spec).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.zeros(1, *shape))
    return float(counter.get_total_flops())


def rates(recorded: Path) -> dict[str, dict[str, float]]:
    """Achieved TFLOP/s per kind of network and precision, from a `bench.gpu` JSON."""
    cases = {c["workload"]: c for c in json.loads(recorded.read_text())["cases"]}
    pick = lambda case, config: next(c["tflops"] for c in cases[case]["configs"] if c["config"] == config)  # noqa: E731
    out = {"conv": {"fp32": pick("resnet56", "fp32 eager"), "bf16": pick("resnet56", "bf16")},
           "mlp": {"fp32": pick("mlp_3x9000", "fp32 eager"), "bf16": pick("mlp_3x9000", "bf16")}}
    ok = [c for c in cases.get("resnet50_224", {}).get("configs", []) if "tflops" in c]
    fp32 = [c["tflops"] for c in ok if c["config"] == "fp32 eager"]
    bf16 = [c["tflops"] for c in ok if c["config"].startswith("bf16")]
    out["conv224"] = {"fp32": fp32[0], "bf16": max(bf16)} if fp32 and bf16 else out["conv"]
    return out


def project(name: str, rate: dict[str, dict[str, float]]) -> tuple[int, float, float, float]:
    """A preset's points, forward FLOPs per sample, and projected seconds on one GPU in fp32 and in bf16."""
    spec, data, points = preset(name)
    shape, samples, _ = DATA[data]
    flops = flops_per_sample(spec, shape)
    kind = rate["mlp" if spec["_target_"].endswith(".mlp") else "conv224" if data == "imagefolder" else "conv"]
    work = points * samples * flops / 1e12
    return points, flops, work / kind["fp32"], work / kind["bf16"]


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min" if seconds >= 60 else "<1 min"


def main(argv: list[str]) -> int:
    recorded = Path(argv[0]) if argv else RECORDED
    rate = rates(recorded)
    print(f"PROJECTED from {recorded.name} (achieved TFLOP/s: convnets {rate['conv']}, on 224x224 images "
          f"{rate['conv224']}, MLPs {rate['mlp']})")
    print("| preset | points | GFLOP/sample | thesis time | thesis devices | projected, 1 GPU fp32 | bf16 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in sorted(p.stem for p in (CONF / "experiment" / "thesis").glob("*.yaml")):
        points, flops, fp32, bf16 = project(name, rate)
        time, devices = THESIS.get(name, ("not in 6.11", "-"))
        print(f"| {name} | {points} | {flops / 1e9:.3f} | {time} | {devices} | {hours(fp32)} | {hours(bf16)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
