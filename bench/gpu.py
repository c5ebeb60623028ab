"""`make bench-gpu` / `python -m bench.gpu`: the engine on one CUDA GPU, under 8 minutes on an H100.

Two workloads of the thesis, on synthetic data of the real shapes:
- ResNet-56 on 50,000 CIFAR-shaped uint8 images (BatchNorm statistics calibrated on the data);
- the MLP 942 -> 3x9000 -> 4759 (TAAF activations, as in the thesis) on 52,407 samples.
For each: points/s, samples/s, achieved TFLOP/s (forward FLOPs counted with
torch.utils.flop_counter) and their fraction of the device's dense bf16 peak, the projected time of
a 200x200 surface on one GPU (setup and warm-up included), Li et al.'s reference loop side by side
on fewer points, and the fp32-vs-bf16 difference. Few points per configuration, extrapolated; compile warm-up is timed apart.
Writes JSON to $OUT (if set) or bench/results/, and prints a table.
`--smoke` runs tiny sizes (on CPU too) to check that the script works.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import replace

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from landscape import data, directions
from landscape.engine import Evaluator
from landscape.models import mlp, resnet56

from .common import calibrate_bn, environment, reference_loop, rel_diff, table, timed, write_json

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by product name; the first match wins.
PEAKS_BF16 = (("H200", 989.4), ("GH200", 989.4), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.4),
              ("H800", 989.4), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0),
              ("L40", 181.0), ("A10G", 70.0), ("A10", 125.0), ("L4", 121.0), ("V100", 125.0))
TARGET_MINUTES = {"resnet56": 30.0, "mlp_3x9000": 25.0}  # issue 4: one H100, 200x200
GRID_POINTS = 200 * 200


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
    if smoke:
        cifar = data.synthetic((3, 32, 32), n_train=64, n_test=1, num_classes=10, seed=0)
        feats = data.synthetic((942,), n_train=128, n_test=1, num_classes=4759, seed=1, images=False)
        return [{"name": "resnet56", "make": resnet56, "split": cifar.train, "classes": 10},
                {"name": "mlp_3x9000", "make": lambda: mlp(942, 4759, [64, 64, 64], taaf=True),
                 "split": feats.train, "classes": 4759, "hidden": [64, 64, 64]}]
    cifar = data.synthetic((3, 32, 32), n_train=50_000, n_test=1, num_classes=10, seed=0)
    feats = data.synthetic((942,), n_train=52_407, n_test=1, num_classes=4759, seed=1, images=False)
    return [{"name": "resnet56", "make": resnet56, "split": cifar.train, "classes": 10},
            {"name": "mlp_3x9000", "make": lambda: mlp(942, 4759, [9000, 9000, 9000], taaf=True),
             "split": feats.train, "classes": 4759, "hidden": [9000, 9000, 9000]}]


def kernel_profile(ev: Evaluator, coords: np.ndarray, device: torch.device, top: int = 12) -> list[dict]:
    """The kernels that take the time of `coords`' points, launched one by one (a replayed graph hides them)."""
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


def run_config(w: dict, label: str, kwargs: dict, state: dict, dirs, coords: np.ndarray, device: torch.device,
               flops_point: float, peak: float | None, target_s: float, log, profile: bool = False) -> dict:
    """Set up an engine, warm it, then time `evaluate` on up to len(coords) points (fewer if slow);
    `profile`: then list the kernels that take the time."""
    rec: dict = {"config": label, "options": kwargs}
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        ev = Evaluator(w["make"](), state, dirs, {"train": w["split"]}, w["classes"], device=device, **kwargs)
        rec["setup_s"] = time.perf_counter() - t0
        t_warm, _ = timed(lambda: ev.evaluate(coords[:2]), device)  # remaining compiles, cudnn autotuning
        t_two, _ = timed(lambda: ev.evaluate(coords[:2]), device)
        n = int(max(2, min(len(coords), target_s / max(t_two / 2, 1e-6))))
        t, vals = timed(lambda: ev.evaluate(coords[:n]), device)
        per_point = t / n
        rec |= {"warmup_s": t_warm, "points": n, "seconds": t, "per_point_s": per_point,
                "points_per_s": 1 / per_point, "samples_per_s": len(w["split"]) / per_point,
                "tflops": flops_point / per_point / 1e12,
                "peak_fraction": (flops_point / per_point / 1e12 / peak) if peak else None,
                # one worker: its setup (choices timed, compiles) and warm-up, then every point
                "projected_200x200_min": (rec["setup_s"] + t_warm + GRID_POINTS * per_point) / 60,
                "losses": vals["train_loss"].tolist(), "engine": dict(ev.info),
                "precision_check": ev.last_info.get("precision_check")}
        if device.type == "cuda":
            rec["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        log(f"  {w['name']} {label}: {rec['points_per_s']:.2f} points/s, {rec['tflops']:.1f} TFLOP/s"
            + (f" ({100 * rec['peak_fraction']:.1f}% of bf16 peak)" if peak else "")
            + f", 200x200 in {rec['projected_200x200_min']:.1f} min; setup {rec['setup_s']:.0f} s "
              f"(mode {ev.choice.mode}, batch {ev.choice.batch_size}, compile {ev.choice.compile}, "
              f"graph {ev.choice.cuda_graph}"
              + (f"; us/sample by batch: {ev.info['batch_decision']}" if "batch_decision" in ev.info else "") + ")")
        if profile:
            rec["kernels"] = kernel_profile(ev, coords[:2], device)
            for k in rec["kernels"]:
                log(f"    {100 * k['share']:5.1f}%  {k['ms_per_point']:8.3f} ms/point  {k['calls_per_point']:7.0f} calls"
                    f"  {k['kernel']}")
        del ev
    except Exception as err:  # noqa: BLE001 - one failing configuration must not lose the others
        rec["error"] = f"{type(err).__name__}: {err}"
        rec["traceback"] = traceback.format_exc()[-4000:]
        log(f"  {w['name']} {label}: FAILED {rec['error'][:300]}")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, any device: does the script run?")
    parser.add_argument("--points", type=int, default=64, help="most points per timed run (one 8x8 tile)")
    parser.add_argument("--seconds", type=float, default=12.0, help="aim of each timed run (fewer points if slow)")
    parser.add_argument("--ref-points", type=int, default=2, help="points of the reference loop")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds after which optional configurations are skipped")
    parser.add_argument("--deadline", type=float, default=450.0,
                        help="seconds after which no configuration starts (the JSON keeps what was done)")
    parser.add_argument("--only", choices=["resnet56", "mlp_3x9000"], help="one workload only")
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    if not torch.cuda.is_available() and not args.smoke:
        print("bench.gpu needs a CUDA GPU (or --smoke to try it on CPU)", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.smoke:
        args.points, args.seconds, args.ref_points = 3, 1.0, 1
    gpu, peak = peak_bf16(device)
    log = lambda s: print(s, flush=True)  # noqa: E731
    log(f"GPU benchmark on {gpu} (dense bf16 peak {peak} TFLOP/s), torch {torch.__version__}")
    record = {"environment": environment(device), "gpu": gpu, "peak_bf16_tflops": peak, "smoke": args.smoke,
              "cases": []}
    name = f"gpu-{'smoke-' if args.smoke else ''}{time.strftime('%Y%m%d-%H%M%S')}.json"
    prepared = []
    for w in workloads(args.smoke):
        if args.only and w["name"] != args.only:
            continue
        torch.manual_seed(0)
        model = w["make"]().to(device)
        calibrate_bn(model, w["split"], device)
        fps = flops_per_sample(model.eval(), w["split"], device)
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        names = [n for n, _ in model.named_parameters()]
        del model
        dirs = directions.random_directions(names, [state[n] for n in names], 2, "filter", "biasbn", 0)
        coords = np.stack([np.linspace(-1, 1, args.points), np.full(args.points, 0.25)], 1)
        flops_point = fps * len(w["split"])
        case = {"workload": w["name"], "samples": len(w["split"]), "gflop_per_sample": fps / 1e9,
                "tflop_per_point": flops_point / 1e12, "hidden": w.get("hidden"), "configs": []}
        record["cases"].append(case)
        log(f"{w['name']}: {len(w['split'])} samples, {fps / 1e9:.3f} GFLOP/sample forward, "
            f"{flops_point / 1e12:.2f} TFLOP per point")
        few = coords[:max(2, min(8, len(coords)))]
        late = lambda: time.perf_counter() - t_start > args.deadline  # noqa: E731
        whole = {"batch_size": len(w["split"]), "cuda_graph": False}  # one batch per point, launched: the old path
        for label, kw, pts in (("bf16", {"precision": "bf16"}, coords),
                               ("bf16 one batch, no graph", {"precision": "bf16", **whole}, coords),
                               ("fp32 eager", {"precision": "fp32", "compile": False, **whole}, few)):
            if late():
                log(f"  {w['name']} {label}: skipped (--deadline {args.deadline:.0f} s)")
                continue
            case["configs"].append(run_config(w, label, kw, state, dirs, pts, device, flops_point, peak,
                                              args.seconds, log, profile=label == "bf16"))
            write_json(record, name)  # partial results survive a kill
        ref_coords = coords[:args.ref_points]  # Li et al.'s loop on the same model and data, fewer points
        try:
            if late():
                raise TimeoutError(f"skipped (--deadline {args.deadline:.0f} s)")
            t_ref, ref_vals = timed(lambda: reference_loop(w["make"], state, dirs.x, dirs.y, w["split"], ref_coords,
                                                           device, batch=128, workers=2), device)
            case["reference"] = {"points": len(ref_coords), "per_point_s": t_ref / len(ref_coords),
                                 "losses": [v[0] for v in ref_vals],
                                 "tflops": flops_point / (t_ref / len(ref_coords)) / 1e12}
            log(f"  {w['name']} reference loop: {t_ref / len(ref_coords):.2f} s/point, "
                f"{case['reference']['tflops']:.2f} TFLOP/s")
        except Exception as err:  # noqa: BLE001
            case["reference"] = {"error": f"{type(err).__name__}: {err}"}
            log(f"  {w['name']} reference loop: FAILED {err}")
        write_json(record, name)
        prepared.append((w, case, state, dirs, coords, flops_point))
        if device.type == "cuda":
            torch.cuda.empty_cache()

    # optional, while time is left, most telling first, each one change from the `bf16` row at its batch size and
    # graph setting (nothing timed again): linear layers unpadded (the default pads them; cheap), max-autotune
    # kernels (for ResNet-56 Triton convolutions with bias, residual and ReLU fused in: the traffic after each conv),
    # BatchNorm unfolded (the default folds; 1.06x on the H200 run)
    # fp16 for ResNet-56 (cheap): cuDNN has more fp16 convolution algorithms than bf16 ones (Winograd among them)
    autotune = {"compile_mode": "max-autotune-no-cudagraphs"}
    optional = [("bf16 unpadded", {"pad_linear": False}, "mlp_3x9000"), ("fp16", {"precision": "fp16"}, "resnet56"),
                ("bf16 max-autotune", autotune, "resnet56"), ("bf16 max-autotune", autotune, "mlp_3x9000"),
                ("bf16 unfolded", {"fold_bn": False}, "resnet56")]
    for label, extra, only in optional:
        for w, case, state, dirs, coords, flops_point in prepared:
            if w["name"] != only:
                continue
            if time.perf_counter() - t_start > min(args.budget, args.deadline):
                log(f"  {w['name']} {label}: skipped (time budget --budget {args.budget:.0f} s)")
                continue
            tuned = next((c["engine"] for c in case["configs"] if c["config"] == "bf16" and "engine" in c), {})
            same = {k: tuned[k] for k in ("batch_size", "cuda_graph") if k in tuned}
            case["configs"].append(run_config(w, label, {"precision": "bf16", **same, **extra}, state, dirs,
                                              coords, device, flops_point, peak, args.seconds, log))
            write_json(record, name)

    for case in record["cases"]:
        ok = {c["config"]: c for c in case["configs"] if "error" not in c}
        ref = case.get("reference", {}).get("per_point_s")
        for c in ok.values():
            c["speedup_vs_reference"] = ref / c["per_point_s"] if ref else None
        if "bf16" in ok and "fp32 eager" in ok:
            k = min(len(ok["bf16"]["losses"]), len(ok["fp32 eager"]["losses"]))
            case["fp32_vs_bf16_max_rel_diff"] = rel_diff(ok["bf16"]["losses"][:k], ok["fp32 eager"]["losses"][:k])
        if "fp32 eager" in ok and "losses" in case.get("reference", {}):
            k = len(case["reference"]["losses"])
            case["reference_vs_fp32_max_rel_diff"] = rel_diff(case["reference"]["losses"],
                                                              ok["fp32 eager"]["losses"][:k])

    rows = []
    for case in record["cases"]:
        for c in case["configs"]:
            rows.append({"workload": case["workload"], "config": c["config"], **{k: c.get(k) for k in (
                "points", "points_per_s", "samples_per_s", "tflops", "speedup_vs_reference", "setup_s")},
                "peak_pct": 100 * c["peak_fraction"] if c.get("peak_fraction") else None,
                "proj_min": c.get("projected_200x200_min"), "error": "FAILED" if "error" in c else ""})
        r = case.get("reference", {})
        rows.append({"workload": case["workload"], "config": "reference (Li et al.)", "points": r.get("points"),
                     "points_per_s": 1 / r["per_point_s"] if r.get("per_point_s") else None,
                     "samples_per_s": case["samples"] / r["per_point_s"] if r.get("per_point_s") else None,
                     "tflops": r.get("tflops"), "proj_min": GRID_POINTS * r["per_point_s"] / 60 if r.get("per_point_s")
                     else None, "error": "FAILED" if "error" in r else ""})
    print()
    print(table(rows, [("workload", "workload", "s"), ("config", "config", "s"), ("points", "pts", "d"),
                       ("points_per_s", "points/s", ".3f"), ("samples_per_s", "samples/s", ".3g"),
                       ("tflops", "TFLOP/s", ".1f"), ("peak_pct", "% bf16 peak", ".1f"),
                       ("proj_min", "200x200 min", ".1f"), ("speedup_vs_reference", "vs ref", ".1f"),
                       ("setup_s", "setup s", ".0f"), ("error", "", "s")]))
    for case in record["cases"]:
        best = min((c for c in case["configs"] if "error" not in c and c["config"].startswith("bf16")),
                   key=lambda c: c["per_point_s"], default=None)
        if best:
            print(f"{case['workload']}: best {best['config']}: 200x200 in {best['projected_200x200_min']:.1f} min "
                  f"(target {TARGET_MINUTES[case['workload']]:.0f}), "
                  f"{best.get('speedup_vs_reference') or float('nan'):.1f}x the reference (target 20x), "
                  f"fp32 vs bf16 {case.get('fp32_vs_bf16_max_rel_diff', float('nan')):.2e}, "
                  f"precision_check {best.get('precision_check') or float('nan'):.2e}")
    record["seconds"] = time.perf_counter() - t_start
    path = write_json(record, name)
    print(f"results: {path}  ({record['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
