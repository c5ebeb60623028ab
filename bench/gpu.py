"""`make bench-gpu` / `python -m bench.gpu`: the engine on one CUDA GPU, in order of value, under `--deadline`.

Synthetic data of the real shapes. Parts (`--only` picks some), in this order:
1. `resnet56` (50,000 CIFAR-shaped uint8 images, BatchNorm calibrated on them) and `mlp_3x9000` (942 -> 3x9000
   -> 4759, TAAF activations, 52,407 samples), the targets: rows `bf16` (every option auto; its kernels
   profiled), `bf16 one batch, no graph` (the first H200 run's path), `fp32 eager` on fewer points, then Li et
   al.'s reference loop on 2 points; the projected time of a 200x200 surface on one GPU.
2. `resnet50_224`: torchvision's ResNet-50 (1000 classes) on uint8 images of ImageNet's shape (3x224x224),
   timed on `--imagenet-samples` images and extrapolated per sample to the 50,000 validation images: rows
   `bf16 eager` and `fp32 eager` at batch 1024; the copy of the images onto the GPU and the image-folder decode
   on this node's cores (bench/decode.py), both timed; the PROJECTED time of the thesis's ImageNet 60x60
   surface on 1 GPU and on 20, term by term (decode once, worker setup, points).
3. `curvature`: metrics=[loss, hessian] (conf/'s defaults) for ResNet-56 on `--curvature-samples`
   CIFAR-shaped images, 2 points: HVPs per point, seconds per point, the curvature/loss ratio, and the
   PROJECTED time of a 51x51 curvature map over the 50,000 images on one GPU and on an array of 32.
4. optional rows, each one change from a part's base row at its batch size and graph setting.
Per row: points/s, samples/s, achieved TFLOP/s (forward FLOPs by torch.utils.flop_counter) and their fraction
of the device's dense bf16 peak, the engine's choices, fp32-vs-bf16 differences. Few points per row,
extrapolated. A step starts only when its guessed cost (NEED, seconds on an H100/H200) fits before the
deadline; the JSON ($OUT if set, else bench/results/) is rewritten after every step, so a kill loses one step.
`--smoke` runs every part at tiny sizes (on CPU too) to check that the script works.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from landscape import data
from landscape.engine import Evaluator
from landscape.models import cifar_resnet, mlp, resnet56, torchvision_classifier
from landscape.models.imagenet import BasicBlock, resnet

from .common import calibrated_plane, environment, reference_loop, rel_diff, table, timed, write_json
from .curvature import OPTIONS, curvature_case, curvature_projection
from .decode import decode_rate
from .thesis import THESIS

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by product name; the first match wins.
PEAKS_BF16 = (("H200", 989.4), ("GH200", 989.4), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.4),
              ("H800", 989.4), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0),
              ("L40", 181.0), ("A10G", 70.0), ("A10", 125.0), ("L4", 121.0), ("V100", 125.0))
TARGET_MINUTES = {"resnet56": 30.0, "mlp_3x9000": 25.0}  # issue 4: one H100, 200x200
GRID_POINTS = 200 * 200
PARTS = ("resnet56", "mlp_3x9000", "resnet50_224", "curvature")
# The thesis's ImageNet surface (6.6; conf/experiment/thesis/imagenet_resnet50): 50,000 validation images, 60x60
IMAGENET = {"samples": 50_000, "points": 60 * 60, "gpus": 20, "thesis": THESIS["imagenet_resnet50"]}
CURVATURE_MAP = {"samples": 50_000, "points": 51 * 51, "workers": 32}
R50_BATCH = 1024  # fixed for ResNet-50: no batch timing (compute-bound at 224x224; each shape would compile)
# Guessed seconds on an H100/H200 (a step starts only if they fit before --deadline); the main rows need none.
NEED = {"resnet50_224": 60, "bf16 eager": 35, "fp32 eager": 40, "decode": 25, "curvature": 60}
AUTOTUNE = {"compile_mode": "max-autotune-no-cudagraphs"}
# Optional rows, most telling first; each one change from the part's base row (its batch and graph kept):
# linear layers unpadded (the default pads them), fp16 (cuDNN has more fp16 convolution algorithms than bf16
# ones), compile and the CUDA graph each flipped from what auto chose, ResNet-50 compiled, max-autotune kernels
# (ResNet-56: Triton convolutions with bias, residual and ReLU fused in; the MLP: the TAAFs fused into the
# GEMMs), BatchNorm unfolded (the default folds; 1.06x on the H200 run), channels_last off.
OPTIONAL: list[tuple[str, dict | Callable[[dict], dict], str, float]] = [
    ("bf16 unpadded", {"pad_linear": False}, "mlp_3x9000", 30),
    ("fp16", {"precision": "fp16"}, "resnet56", 40),
    ("bf16 compile flipped", lambda tuned: {"compile": not tuned.get("compile", False)}, "resnet56", 40),
    ("bf16 graph flipped", lambda tuned: {"cuda_graph": not tuned.get("cuda_graph", False)}, "resnet56", 40),
    ("bf16 compiled", {"compile": True}, "resnet50_224", 120),
    ("bf16 max-autotune", AUTOTUNE, "resnet56", 150),
    ("bf16 max-autotune", AUTOTUNE, "mlp_3x9000", 120),
    ("bf16 unfolded", {"fold_bn": False}, "resnet56", 40),
    ("bf16 no channels_last", {"channels_last": False}, "resnet56", 40),
]


@dataclass(frozen=True)
class Prepared:
    """A workload ready to time: its calibrated state and plane, the points, and its record in the JSON."""

    w: dict
    case: dict
    state: dict
    dirs: Any
    coords: np.ndarray
    flops_point: float


class Clock:
    """Seconds since the start; `allows` says whether a step that needs `need` seconds still fits; `log`
    prints a line stamped with the seconds so far."""

    def __init__(self, deadline: float):
        self.t0, self.deadline = time.perf_counter(), deadline

    def log(self, line: str) -> None:
        print(f"[{self.elapsed():4.0f} s] {line}", flush=True)

    def allows(self, what: str, need: float = 0.0) -> bool:
        left = self.deadline - (time.perf_counter() - self.t0)
        if left > need:
            return True
        self.log(f"  {what}: skipped ({left:.0f} s left of --deadline {self.deadline:.0f}, needs about {need:.0f})")
        return False

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def peak_bf16(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((p for key, p in PEAKS_BF16 if key.lower() in name.lower()), None)


def flops_per_sample(model: torch.nn.Module, split: data.Split, device: torch.device) -> float:
    x = split.inputs(0, 16).to(device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / x.shape[0]


def workloads(smoke: bool) -> list[dict]:
    """The two targets (`grid`: the points of their surface)."""
    n_cifar, n_feats, hidden = (16, 128, [64, 64, 64]) if smoke else (50_000, 52_407, [9000, 9000, 9000])
    cifar = data.synthetic((3, 32, 32), n_train=n_cifar, n_test=1, num_classes=10, seed=0)
    feats = data.synthetic((942,), n_train=n_feats, n_test=1, num_classes=4759, seed=1, images=False)
    return [{"name": "resnet56", "make": resnet56, "split": cifar.train, "classes": 10, "grid": GRID_POINTS},
            {"name": "mlp_3x9000", "make": lambda: mlp(942, 4759, hidden, taaf=True), "split": feats.train,
             "classes": 4759, "hidden": hidden, "grid": GRID_POINTS}]


def imagenet_workload(samples: int, smoke: bool) -> dict:
    """torchvision's ResNet-50 (the imagenet_resnet50 preset's model) on uint8 images of ImageNet's shape
    (--smoke: a ResNet-10 of the same layout at 32x32); no 200x200 grid: its surface is the thesis's 60x60."""
    shape = (3, 32, 32) if smoke else (3, 224, 224)
    split = data.synthetic(shape, n_train=samples, n_test=1, num_classes=1000, seed=2).train
    make = (lambda: resnet(BasicBlock, [1, 1, 1, 1])) if smoke else \
        (lambda: torchvision_classifier("resnet50", num_classes=1000))
    return {"name": "resnet50_224", "model": "resnet10 (smoke)" if smoke else "resnet50", "make": make,
            "split": split, "classes": 1000, "grid": None, "base": "bf16 eager"}


def prepare(w: dict, points: int, device: torch.device, log) -> Prepared:
    """BatchNorm calibrated on the data, forward FLOPs counted, a filter-normalised random plane."""
    state, _, dirs = calibrated_plane(w["make"], w["split"], device)
    model = w["make"]()
    model.load_state_dict(state)
    fps = flops_per_sample(model.to(device).eval(), w["split"], device)
    del model
    coords = np.stack([np.linspace(-1, 1, points), np.full(points, 0.25)], 1)
    case = {"workload": w["name"], "model": w.get("model", w["name"]), "samples": len(w["split"]),
            "input_shape": list(w["split"].x.shape[1:]),
            "gflop_per_sample": fps / 1e9, "tflop_per_point": fps * len(w["split"]) / 1e12,
            "hidden": w.get("hidden"), "configs": []}
    log(f"{w['name']}: {len(w['split'])} samples, {fps / 1e9:.3f} GFLOP/sample forward, "
        f"{case['tflop_per_point']:.2f} TFLOP per point")
    return Prepared(w, case, state, dirs, coords, fps * len(w["split"]))


def failed(err: Exception) -> dict:
    """A step's error in the JSON, so one failing step loses nothing else."""
    return {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-4000:]}


def kernel_profile(ev: Evaluator, coords: np.ndarray, device: torch.device, top: int = 12) -> list[dict]:
    """The kernels that take the time of `coords`' points, launched one by one (a replayed graph hides them).
    Kernel time only: torch.profiler gives no per-kernel memory traffic (that needs Nsight Compute)."""
    from torch.profiler import ProfilerActivity, profile
    runner, options = ev.runner, ev.options
    ev.choose(replace(ev.choice, cuda_graph=False))
    ev.options = replace(options, precision_check=0)
    cuda = device.type == "cuda"
    try:
        with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
            ev.evaluate(coords)
            if cuda:
                torch.cuda.synchronize(device)
    finally:
        ev.choose(runner.choice)
        ev.runner, ev.options = runner, options  # the captured graphs too
    own = lambda e: getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0) if cuda \
        else e.self_cpu_time_total  # noqa: E731 - microseconds
    events = [e for e in prof.key_averages() if own(e) > 0]
    total = sum(own(e) for e in events) or 1.0
    n = len(coords)
    return [{"kernel": e.key[:120], "calls_per_point": e.count / n, "ms_per_point": own(e) / 1e3 / n,
             "share": own(e) / total} for e in sorted(events, key=own, reverse=True)[:top]]


def run_config(p: Prepared, label: str, kwargs: dict, coords: np.ndarray, device: torch.device,
               peak: float | None, target_s: float, log, profile: bool = False) -> dict:
    """Set up an engine, warm it, then time `evaluate` on up to len(coords) points (fewer if slow);
    `profile`: then list the kernels that take the time."""
    w, t_start = p.w, time.perf_counter()
    rec: dict = {"config": label, "options": kwargs}
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        ev = Evaluator(w["make"](), p.state, p.dirs, {"train": w["split"]}, w["classes"], device=device, **kwargs)
        rec["setup_s"] = time.perf_counter() - t_start
        t_warm, _ = timed(lambda: ev.evaluate(coords[:2]), device)  # remaining compiles, cudnn autotuning
        t_two, _ = timed(lambda: ev.evaluate(coords[:2]), device)
        n = int(max(2, min(len(coords), target_s / max(t_two / 2, 1e-6))))
        t, vals = timed(lambda: ev.evaluate(coords[:n]), device)
        per_point = t / n
        rec |= {"warmup_s": t_warm, "points": n, "seconds": t, "per_point_s": per_point,
                "points_per_s": 1 / per_point, "samples_per_s": len(w["split"]) / per_point,
                "tflops": p.flops_point / per_point / 1e12,
                "peak_fraction": (p.flops_point / per_point / 1e12 / peak) if peak else None,
                # one worker: its setup (choices timed, compiles) and warm-up, then every point
                "projected_200x200_min": (rec["setup_s"] + t_warm + w["grid"] * per_point) / 60 if w["grid"] else None,
                "losses": vals["train_loss"].tolist(), "engine": dict(ev.info),
                "precision_check": ev.last_info.get("precision_check")}
        if device.type == "cuda":
            rec["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        log(f"  {w['name']} {label}: {rec['points_per_s']:.2f} points/s, {rec['tflops']:.1f} TFLOP/s"
            + (f" ({100 * rec['peak_fraction']:.1f}% of bf16 peak)" if peak else "")
            + (f", 200x200 in {rec['projected_200x200_min']:.1f} min" if w["grid"] else "")
            + f"; setup {rec['setup_s']:.0f} s (mode {ev.choice.mode}, batch {ev.choice.batch_size}, "
              f"compile {ev.choice.compile}, graph {ev.choice.cuda_graph}"
              + (f"; us/sample by batch: {ev.info['batch_decision']}" if "batch_decision" in ev.info else "") + ")")
        if profile:
            rec["kernels"] = kernel_profile(ev, coords[:2], device)
            for k in rec["kernels"]:
                log(f"    {100 * k['share']:5.1f}%  {k['ms_per_point']:8.3f} ms/point  {k['calls_per_point']:7.0f} calls"
                    f"  {k['kernel']}")
        del ev
    except Exception as err:  # noqa: BLE001 - one failing configuration must not lose the others
        rec |= failed(err)
        log(f"  {w['name']} {label}: FAILED {rec['error'][:300]}")
    rec["wall_s"] = time.perf_counter() - t_start
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rec


def rows(p: Prepared, specs: list[tuple[str, dict, np.ndarray, float]], device: torch.device, peak: float | None,
         args, clock: Clock, log, save) -> None:
    """Each (label, engine keywords, points, seconds needed) row that still fits, saved after each."""
    for label, kw, pts, need in specs:
        if clock.allows(f"{p.w['name']} {label}", need):
            p.case["configs"].append(run_config(p, label, kw, pts, device, peak, args.seconds, log,
                                                profile=label == "bf16"))
            save()


def reference(p: Prepared, args, device: torch.device, clock: Clock, log) -> None:
    """Li et al.'s loop on the same model and data, fewer points."""
    ref_coords = p.coords[:args.ref_points]
    if not clock.allows(f"{p.w['name']} reference loop"):
        p.case["reference"] = {"error": f"skipped (--deadline {args.deadline:.0f} s)"}
        return
    try:
        t_ref, ref_vals = timed(lambda: reference_loop(p.w["make"], p.state, p.dirs.x, p.dirs.y, p.w["split"],
                                                       ref_coords, device, batch=128, workers=2), device)
        p.case["reference"] = {"points": len(ref_coords), "per_point_s": t_ref / len(ref_coords),
                               "losses": [v[0] for v in ref_vals],
                               "tflops": p.flops_point / (t_ref / len(ref_coords)) / 1e12}
        log(f"  {p.w['name']} reference loop: {t_ref / len(ref_coords):.2f} s/point, "
            f"{p.case['reference']['tflops']:.2f} TFLOP/s")
    except Exception as err:  # noqa: BLE001
        p.case["reference"] = failed(err)
        log(f"  {p.w['name']} reference loop: FAILED {err}")


def imagenet_projection(c: dict, case: dict) -> dict:
    """PROJECTED time of the thesis's ImageNet 60x60 surface from one timed ResNet-50 row: per point, the
    row's seconds scaled per sample to 50,000 images; per worker, its setup and warm-up as timed plus the copy
    of the 50,000 images onto its GPU; once per run, before any worker, the decode into the cache at this
    node's measured rate (None where not measured). Hours on 1 GPU and on the thesis's 20."""
    full = IMAGENET["samples"]
    point = c["per_point_s"] * full / case["samples"]
    copy = case.get("copy_s_per_sample", 0.0) * full
    decode = full / case["decode"]["images_per_s"] if "images_per_s" in case.get("decode", {}) else None
    worker = c["setup_s"] + c["warmup_s"] + copy
    hours = lambda gpus: ((decode or 0.0) + worker + -(-IMAGENET["points"] // gpus) * point) / 3600  # noqa: E731
    return {"samples": full, "points": IMAGENET["points"], "per_point_s": point, "worker_setup_s": worker,
            "copy_s": copy, "decode_s": decode, "one_gpu_h": hours(1), "gpus": IMAGENET["gpus"],
            "gpus_h": hours(IMAGENET["gpus"]), "thesis": IMAGENET["thesis"]}


def imagenet_part(args, device: torch.device, peak: float | None, record: dict, clock: Clock, log, save
                  ) -> Prepared | None:
    """ResNet-50 at 224x224 on uint8 images: its rows, the copy onto the GPU, the decode rate, projections."""
    if not clock.allows("resnet50_224", NEED["resnet50_224"]):
        return None
    try:
        p = prepare(imagenet_workload(args.imagenet_samples, args.smoke), args.points, device, log)
    except Exception as err:  # noqa: BLE001
        record["cases"].append({"workload": "resnet50_224", "configs": [], **failed(err)})
        log(f"resnet50_224: FAILED {err}")
        return None
    record["cases"].append(p.case)
    x = p.w["split"].x
    t_copy, _ = timed(lambda: x.to(device), device)  # what the engine's setup does with the images
    p.case["copy_s_per_sample"] = t_copy / len(x)
    batch = {"batch_size": R50_BATCH}
    rows(p, [("bf16 eager", {"precision": "bf16", "compile": False, **batch}, p.coords, NEED["bf16 eager"]),
             ("fp32 eager", {"precision": "fp32", "compile": False, "cuda_graph": False, **batch}, p.coords[:2],
              NEED["fp32 eager"])], device, peak, args, clock, log, save)
    if clock.allows("image-folder decode", NEED["decode"]):
        try:
            p.case["decode"] = decode_rate(*((8, 1) if args.smoke else (args.decode_images, os.cpu_count() or 1)))
            log(f"  image-folder decode on this node: {p.case['decode']['images_per_s']:.0f} images/s with "
                f"{p.case['decode']['workers']} processes")
        except Exception as err:  # noqa: BLE001
            p.case["decode"] = failed(err)
        save()
    return p


def curvature_part(args, device: torch.device, record: dict, clock: Clock, log, save) -> None:
    """metrics=[loss, hessian] for ResNet-56 on CIFAR-shaped images, fixed engine choices (no tuning);
    --smoke: a ResNet-8 and at most 2 HVPs per point (a CPU takes seconds per HVP at any size)."""
    if not clock.allows("curvature", NEED["curvature"]):
        return
    split = data.synthetic((3, 32, 32), n_train=args.curvature_samples, n_test=1, num_classes=10, seed=3).train
    name, make = ("resnet8 (smoke)", lambda: cifar_resnet(8)) if args.smoke else ("resnet56", resnet56)
    options = replace(OPTIONS, max_iter=2) if args.smoke else OPTIONS
    log(f"curvature: {name}, {len(split)} samples, tol {options.tol}, at most {options.max_iter} HVPs per point")
    try:
        row = curvature_case(name, make, split, log, device, options,
                             {"compile": False, "batch_size": 1024, "cuda_graph": False})
        m = CURVATURE_MAP
        row["projected"] = [curvature_projection(row, hs, m["samples"], m["points"], m["workers"])
                            for hs in (m["samples"], len(split))]
        for pr in row["projected"]:
            log(f"  51x51 curvature map, hessian over {pr['hessian_samples']} samples: {pr['per_point_s']:.1f} s "
                f"per point, {pr['one_h']:.1f} h on one GPU, {pr['array_h']:.2f} h on {pr['workers']} (PROJECTED)")
    except Exception as err:  # noqa: BLE001
        row = failed(err)
        log(f"  curvature: FAILED {row['error'][:300]}")
    record["curvature"] = row
    save()


def optional_rows(prepared: dict[str, Prepared], device: torch.device, peak: float | None, args, clock: Clock,
                  log, save) -> None:
    """OPTIONAL, in order, while each fits: the base row's options, batch and graph, with one change."""
    for label, change, part, need in OPTIONAL:
        p = prepared.get(part)
        base = p and next((c for c in p.case["configs"] if c["config"] == p.w.get("base", "bf16")
                           and "engine" in c), None)
        if base is None:
            continue
        tuned = {k: base["engine"][k] for k in ("batch_size", "cuda_graph") if k in base["engine"]}
        kw = {**base["options"], **tuned, **(change(base["engine"]) if callable(change) else change)}
        if args.smoke and (kw.get("compile") is True or "compile_mode" in kw):
            log(f"  {part} {label}: skipped (--smoke: compiling takes minutes on a CPU)")
            continue
        rows(p, [(label, kw, p.coords, need)], device, peak, args, clock, log, save)


def summarised(record: dict) -> dict:
    """Derived figures (vs the reference, fp32 vs bf16, ImageNet projections), recomputed before each save."""
    for case in record["cases"]:
        ok = {c["config"]: c for c in case["configs"] if "error" not in c}
        ref = case.get("reference", {}).get("per_point_s")
        for c in ok.values():
            c["speedup_vs_reference"] = ref / c["per_point_s"] if ref else None
            if case["workload"] == "resnet50_224":
                c["imagenet_60x60"] = imagenet_projection(c, case)
        bf16 = ok.get("bf16") or ok.get("bf16 eager")
        if bf16 and "fp32 eager" in ok:
            k = min(len(bf16["losses"]), len(ok["fp32 eager"]["losses"]))
            case["fp32_vs_bf16_max_rel_diff"] = rel_diff(bf16["losses"][:k], ok["fp32 eager"]["losses"][:k])
        if "fp32 eager" in ok and "losses" in case.get("reference", {}):
            k = len(case["reference"]["losses"])
            case["reference_vs_fp32_max_rel_diff"] = rel_diff(case["reference"]["losses"],
                                                              ok["fp32 eager"]["losses"][:k])
    return record


def report(record: dict) -> None:
    """The table of rows, then each part's verdict against its target or the thesis."""
    out = []
    for case in record["cases"]:
        for c in case["configs"]:
            out.append({"workload": case["workload"], "config": c["config"], **{k: c.get(k) for k in (
                "points", "points_per_s", "samples_per_s", "tflops", "speedup_vs_reference", "setup_s")},
                "peak_pct": 100 * c["peak_fraction"] if c.get("peak_fraction") else None,
                "proj_min": c.get("projected_200x200_min"), "error": "FAILED" if "error" in c else ""})
        r = case.get("reference")
        if r is not None:
            out.append({"workload": case["workload"], "config": "reference (Li et al.)", "points": r.get("points"),
                        "points_per_s": 1 / r["per_point_s"] if r.get("per_point_s") else None,
                        "samples_per_s": case["samples"] / r["per_point_s"] if r.get("per_point_s") else None,
                        "tflops": r.get("tflops"), "proj_min": GRID_POINTS * r["per_point_s"] / 60
                        if r.get("per_point_s") else None, "error": "FAILED" if "error" in r else ""})
    print()
    print(table(out, [("workload", "workload", "s"), ("config", "config", "s"), ("points", "pts", "d"),
                      ("points_per_s", "points/s", ".3f"), ("samples_per_s", "samples/s", ".3g"),
                      ("tflops", "TFLOP/s", ".1f"), ("peak_pct", "% bf16 peak", ".1f"),
                      ("proj_min", "200x200 min", ".1f"), ("speedup_vs_reference", "vs ref", ".1f"),
                      ("setup_s", "setup s", ".0f"), ("error", "", "s")]))
    for case in record["cases"]:
        ok = [c for c in case["configs"] if "error" not in c]
        if case["workload"] == "resnet50_224":
            for c in ok:
                pr = c["imagenet_60x60"]
                decode = "not measured" if pr["decode_s"] is None else f"{pr['decode_s']:.0f} s"
                print(f"resnet50_224 {c['config']}: ImageNet 60x60 PROJECTED (timed on {case['samples']} images, per "
                      f"sample to {pr['samples']}): {pr['per_point_s']:.2f} s/point; 1 GPU {pr['one_gpu_h']:.2f} h, "
                      f"{pr['gpus']} GPUs {pr['gpus_h']:.2f} h (decode once {decode}, worker setup "
                      f"{pr['worker_setup_s']:.0f} s incl. copy {pr['copy_s']:.1f} s); thesis {pr['thesis'][0]} on "
                      f"{pr['thesis'][1]}")
            continue
        best = min((c for c in ok if c["config"].startswith("bf16")), key=lambda c: c["per_point_s"], default=None)
        if best:
            print(f"{case['workload']}: best {best['config']}: 200x200 in {best['projected_200x200_min']:.1f} min "
                  f"(target {TARGET_MINUTES[case['workload']]:.0f}), "
                  f"{best.get('speedup_vs_reference') or float('nan'):.1f}x the reference (target 20x), "
                  f"fp32 vs bf16 {case.get('fp32_vs_bf16_max_rel_diff', float('nan')):.2e}, "
                  f"precision_check {best.get('precision_check') or float('nan'):.2e}")
    curv = record.get("curvature")
    if curv and "error" not in curv:
        print(f"curvature {curv['model']} ({curv['samples']} samples): {curv['hvps']:.1f} HVPs/point, "
              f"{curv['point_s']:.2f} s/point, {curv['ratio']:.0f}x a loss point; 51x51 map PROJECTED over "
              f"{CURVATURE_MAP['samples']} samples: {curv['projected'][0]['one_h']:.1f} h on one GPU, "
              f"{curv['projected'][0]['array_h']:.2f} h on {CURVATURE_MAP['workers']}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, any device: does the script run?")
    parser.add_argument("--points", type=int, default=64, help="most points per timed run (one 8x8 tile)")
    parser.add_argument("--seconds", type=float, default=12.0, help="aim of each timed run (fewer points if slow)")
    parser.add_argument("--ref-points", type=int, default=2, help="points of the reference loop")
    parser.add_argument("--deadline", type=float, default=450.0,
                        help="seconds by which the steps should end: a step starts only if its guessed cost fits")
    parser.add_argument("--only", default=",".join(PARTS), help=f"parts, comma-separated: {', '.join(PARTS)}")
    parser.add_argument("--imagenet-samples", type=int, default=10_000,
                        help="ResNet-50 images timed (extrapolated per sample to 50,000)")
    parser.add_argument("--decode-images", type=int, default=1024, help="JPEGs decoded for the decode rate")
    parser.add_argument("--curvature-samples", type=int, default=1024,
                        help="images the curvature is timed on (extrapolated per sample to 50,000)")
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"--only {unknown[0]!r} is not a part: use {', '.join(PARTS)}")
    if args.smoke:
        args.points, args.seconds, args.ref_points = 3, 1.0, 1
        args.imagenet_samples, args.curvature_samples = 4, 4
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not torch.cuda.is_available() and not args.smoke:
        print("bench.gpu needs a CUDA GPU (or --smoke to try it on CPU)", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu, peak = peak_bf16(device)
    clock = Clock(args.deadline)
    log = clock.log
    log(f"GPU benchmark on {gpu} (dense bf16 peak {peak} TFLOP/s), torch {torch.__version__}, parts {args.parts}")
    record = {"environment": environment(device), "gpu": gpu, "peak_bf16_tflops": peak, "smoke": args.smoke,
              "parts": args.parts, "cases": []}
    name = f"gpu-{'smoke-' if args.smoke else ''}{time.strftime('%Y%m%d-%H%M%S')}.json"
    save = lambda: write_json(summarised(record), name)  # noqa: E731 - partial results survive a kill
    prepared: dict[str, Prepared] = {}
    for w in workloads(args.smoke):
        if w["name"] not in args.parts:
            continue
        torch.manual_seed(0)
        p = prepared[w["name"]] = prepare(w, args.points, device, log)
        record["cases"].append(p.case)
        whole = {"batch_size": len(w["split"]), "cuda_graph": False}  # one batch per point, launched: the old path
        few = p.coords[:max(2, min(8, len(p.coords)))]
        rows(p, [("bf16", {"precision": "bf16"}, p.coords, 0), ("bf16 one batch, no graph",
                 {"precision": "bf16", **whole}, p.coords, 0),
                 ("fp32 eager", {"precision": "fp32", "compile": False, **whole}, few, 0)],
             device, peak, args, clock, log, save)
        reference(p, args, device, clock, log)
        save()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if "resnet50_224" in args.parts:
        p = imagenet_part(args, device, peak, record, clock, log, save)
        if p:
            prepared["resnet50_224"] = p
    if "curvature" in args.parts:
        curvature_part(args, device, record, clock, log, save)
    optional_rows(prepared, device, peak, args, clock, log, save)
    report(summarised(record))
    record["seconds"] = clock.elapsed()
    path = save()
    print(f"results: {path}  ({record['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
