"""`make bench`: the engine on CPU against bare forward passes and against Li et al.'s loop.

For the digits CNN (built-in data) and ResNet-20 on a synthetic CIFAR-shaped split:
  efficiency = (points x time of one bare forward pass over the split) / (surface time)
where the bare pass runs the network the engine runs (BatchNorm folded where it folds it, the same
memory format) over pre-normalised inputs at its batch size, and the surface time is
`Evaluator.evaluate` over the points (moves, refolds, normalisation, loss, sync). Each repeat times
P bare passes then the surface of P points; the median ratio over repeats is reported (a shared,
noisy machine). Also: the plain model's forward (NCHW, BatchNorm unfolded), Li et al.'s loop side by
side, BatchNorm folding and channels_last on/off, vmap against loop, glibc malloc tuning, and the curvature
row (`bench/curvature.py`). The last line printed is `engine efficiency: <lowest efficiency over the models>`.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch

from landscape import data, directions
from landscape.engine import Evaluator
from landscape.hardware import tune_cpu_malloc
from landscape.models import digits_cnn, mlp, resnet20

from .common import bare_forward, calibrated_plane, environment, reference_loop, table, timed, write_json
from .curvature import curvature_rows, curvature_table

CPU = torch.device("cpu")

MALLOC_PROBE = """
import os, sys, time, resource, torch
torch.set_num_threads(int(os.environ.get("LANDSCAPE_BENCH_THREADS", "1")))
if sys.argv[1] == "tuned":
    from landscape.hardware import tune_cpu_malloc
    tune_cpu_malloc()
from landscape.models import resnet20
torch.manual_seed(0)
m = resnet20().eval()
x = torch.randn(512, 3, 32, 32)
ts = []
with torch.inference_mode():
    m(x)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(int(sys.argv[2])):
        t = time.perf_counter(); m(x); ts.append(time.perf_counter() - t)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
n = len(ts)
print(min(ts), sorted(ts)[n // 2], (r1.ru_stime - r0.ru_stime) / n, (r1.ru_minflt - r0.ru_minflt) / n)
"""


def case(name: str, make, split: data.Split, num_classes: int, points: int, reps: int, ref_points: int,
         vmap_points: tuple[int, ...], log) -> dict:
    state, names, dirs = calibrated_plane(make, split, CPU)
    coords = np.stack(np.meshgrid(np.linspace(-1, 1, points), [0.25]), -1).reshape(-1, 2)
    splits = {"train": split}
    t0 = time.perf_counter()
    ev = Evaluator(make(), state, dirs, splits, num_classes)  # every option on auto, as a worker runs it
    setup = time.perf_counter() - t0
    # the bare pass runs the network the engine runs (BatchNorm folded where the engine folds it, same
    # memory format): efficiency is the machinery's cost. The plain model in NCHW is timed below.
    fwd = bare_forward(ev.net, split, ev.choice.batch_size, CPU, channels_last=ev.channels_last)
    fwd()
    ev.evaluate(coords[:1])  # warm-up
    t_fwd, t_surf = [], []
    for _ in range(reps):  # paired and interleaved: P bare passes, then the surface of P points
        t_fwd.append(timed(lambda: [fwd() for _ in coords], CPU)[0])
        t_surf.append(timed(lambda: ev.evaluate(coords), CPU)[0])
    ratios = [f / s for f, s in zip(t_fwd, t_surf)]
    fwd_s, surf_s = float(np.median(t_fwd)) / len(coords), float(np.median(t_surf))
    per_point = surf_s / len(coords)
    log(f"  {name}: forward {fwd_s * 1e3:.1f} ms, surface {per_point * 1e3:.1f} ms/point "
        f"(mode {ev.choice.mode}, batch {ev.choice.batch_size}); "
        f"efficiency per repeat {' '.join(f'{r:.3f}' for r in ratios)}")
    record = {"model": name, "samples": len(split), "points": len(coords), "mode": ev.choice.mode,
              "channels_last": ev.channels_last,
              "batch_size": ev.choice.batch_size, "setup_s": setup, "mode_decision": ev.info.get("mode_decision"),
              "forward_s": fwd_s, "points_x_forward_s_all": t_fwd, "surface_s": surf_s, "surface_s_all": t_surf,
              "per_point_s": per_point, "efficiency_per_repeat": ratios,
              "efficiency": float(np.median(ratios)),
              "efficiency_best_of": len(coords) * min(t_fwd) / len(coords) / min(t_surf)}

    # Li et al.'s loop, same model, data and points (fewer of them)
    ref_coords = coords[:ref_points]
    t_ref, ref_vals = timed(lambda: reference_loop(make, state, dirs.x, dirs.y, split, ref_coords, CPU), CPU)
    ours = ev.evaluate(ref_coords)
    record |= {"reference_per_point_s": t_ref / len(ref_coords),
               "speedup_vs_reference": t_ref / len(ref_coords) / per_point,
               "reference_max_rel_diff": float(np.max(np.abs(np.array([v[0] for v in ref_vals]) - ours["train_loss"])
                                                      / ours["train_loss"]))}
    log(f"  {name}: reference loop {record['reference_per_point_s'] * 1e3:.1f} ms/point "
        f"-> engine {record['speedup_vs_reference']:.1f}x faster "
        f"(losses agree to {record['reference_max_rel_diff']:.1e})")

    # the engine's CPU defaults against BatchNorm left unfolded and against the NCHW layout, interleaved
    unfolded = Evaluator(make(), state, dirs, splits, num_classes, fold_bn=False, mode="loop")
    nchw = Evaluator(make(), state, dirs, splits, num_classes, channels_last=False, mode="loop")
    plain = make()
    plain.load_state_dict(state)
    plain_fwd = bare_forward(plain.eval(), split, ev.choice.batch_size, CPU)  # as a user would run the model
    half = coords[::2]
    times: dict[str, list[float]] = {"default": [], "unfolded": [], "nchw": [], "plain_forward": []}
    for e in (unfolded, nchw):
        e.evaluate(half[:1])
    for _ in range(max(3, reps - 2)):
        for key, e in (("default", ev), ("unfolded", unfolded), ("nchw", nchw)):
            times[key].append(timed(lambda: e.evaluate(half), CPU)[0] / len(half))
        times["plain_forward"].append(timed(plain_fwd, CPU)[0])
    best = {k: float(np.median(v)) for k, v in times.items()}  # medians of interleaved runs
    record |= {"fold_bn_pairs": ev.folder.pairs if ev.folder else 0, "variant_per_point_s": best,
               "fold_bn_speedup": best["unfolded"] / best["default"],
               "channels_last_speedup": best["nchw"] / best["default"],
               "vs_plain_forward": best["plain_forward"] / best["default"]}
    log(f"  {name}: per point {best['default'] * 1e3:.1f} ms (fold_bn {ev.folder is not None}, channels_last "
        f"{ev.channels_last}); BatchNorm unfolded {best['unfolded'] * 1e3:.1f} ms "
        f"({record['fold_bn_speedup']:.2f}x for folding); NCHW {best['nchw'] * 1e3:.1f} ms "
        f"({record['channels_last_speedup']:.2f}x for channels_last); plain model forward (NCHW, unfolded) "
        f"{best['plain_forward'] * 1e3:.1f} ms ({record['vs_plain_forward']:.2f}x)")

    # vmap against loop: the decision data for convnets (auto keeps them on loop)
    record["vmap_per_point_s"] = {}
    for p in vmap_points:
        vm = Evaluator(make(), state, dirs, splits, num_classes, mode="vmap", points_per_batch=p,
                       fold_bn=ev.folder is not None)
        vc = coords[:p] if len(coords) >= p else np.resize(coords, (p, 2))
        vm.evaluate(vc)
        record["vmap_per_point_s"][p] = min(timed(lambda: vm.evaluate(vc), CPU)[0] for _ in range(2)) / p
        log(f"  {name}: vmap {p} points/forward {record['vmap_per_point_s'][p] * 1e3:.1f} ms/point")
    return record


def mode_probe(log) -> list[dict]:
    """Where vmap pays: auto's own measurement (seconds per point) and its choice, for two MLPs."""
    d = data.digits()
    out = []
    for hidden in ([32], [256, 256]):
        make = lambda: mlp(64, 10, hidden)  # noqa: E731
        torch.manual_seed(0)
        model = make()
        state = model.state_dict()
        names = [n for n, _ in model.named_parameters()]
        dirs = directions.random_directions(names, [state[n] for n in names], 2, "filter", "biasbn", 0)
        ev = Evaluator(make(), state, dirs, {"train": d.train}, 10)
        label = f"mlp 64-{'-'.join(map(str, hidden))}-10"
        log(f"  {label} (digits): auto chose {ev.choice.mode} x{ev.choice.points_per_batch}; "
            f"seconds/point {ev.info['mode_decision']}")
        out.append({"model": label, "samples": len(d.train), "chosen": ev.choice.mode,
                    "points_per_batch": ev.choice.points_per_batch,
                    "seconds_per_point": ev.info["mode_decision"]})
    return out


def compile_effect(models: list[tuple], reps: int, log) -> list[dict]:
    """torch.compile on this CPU (inductor's C++ backend) against eager: setup, and the median of paired,
    interleaved per-point timings (this machine is shared: one-off timings move by 30%)."""
    out = []
    for name, make, split, num_classes, npts in models:
        torch.manual_seed(0)
        model = make()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        names = [n for n, _ in model.named_parameters()]
        dirs = directions.random_directions(names, [state[n] for n in names], 2, "filter", "biasbn", 0)
        coords = np.stack([np.linspace(-1, 1, npts), np.zeros(npts)], 1)
        evs, setup = {}, {}
        for compiled in (False, True):
            t0 = time.perf_counter()
            evs[compiled] = Evaluator(make(), state, dirs, {"train": split}, num_classes, mode="loop",
                                      compile=compiled)
            evs[compiled].evaluate(coords[:2])  # compiles here
            setup[compiled] = time.perf_counter() - t0
        ratios, per = [], {False: [], True: []}
        for _ in range(reps):
            for compiled in (False, True):
                per[compiled].append(timed(lambda: evs[compiled].evaluate(coords), CPU)[0] / npts)
            ratios.append(per[False][-1] / per[True][-1])
        rec = {"model": name, "speedup": float(np.median(ratios)), "ratios": ratios, "setup_s": setup[True],
               "eager_per_point_s": float(np.median(per[False])), "compiled_per_point_s": float(np.median(per[True]))}
        log(f"  {name}: torch.compile {rec['compiled_per_point_s'] * 1e3:.1f} ms/point after {rec['setup_s']:.0f} s "
            f"of setup, eager {rec['eager_per_point_s'] * 1e3:.1f} ms/point: {rec['speedup']:.2f}x "
            f"(per repeat {' '.join(f'{r:.2f}' for r in ratios)})")
        out.append(rec)
    return out


def malloc_effect(reps: int, log) -> dict:
    """ResNet-20 forward over 512 CIFAR-shaped images at batch 512, glibc default vs tuned (fresh processes)."""
    out = {}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for how in ("default", "tuned", "default", "tuned"):
        proc = subprocess.run([sys.executable, "-c", MALLOC_PROBE, how, str(reps)], capture_output=True, text=True,
                              cwd=root, env={**os.environ, "PYTHONPATH": root})
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        best, median, sys_s, faults = map(float, proc.stdout.split()[-4:])
        prev = out.get(how)
        if prev is None or best < prev["best_s"]:
            out[how] = {"best_s": best, "median_s": median, "system_s_per_pass": sys_s, "page_faults_per_pass": faults}
    out["speedup"] = out["default"]["best_s"] / out["tuned"]["best_s"]
    log(f"  malloc: default {out['default']['best_s']:.3f} s ({out['default']['page_faults_per_pass']:.0f} faults, "
        f"{out['default']['system_s_per_pass']:.2f} s sys), tuned {out['tuned']['best_s']:.3f} s "
        f"({out['tuned']['page_faults_per_pass']:.0f} faults, {out['tuned']['system_s_per_pass']:.2f} s sys): "
        f"{out['speedup']:.2f}x")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="paired repeats (the median ratio is reported)")
    parser.add_argument("--points", type=int, default=8, help="grid points per timed surface")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: what each of `launcher.workers=2` gets on a 2-core "
                             "machine, and stable on a shared one)")
    parser.add_argument("--quick", action="store_true", help="fewer points and repeats (a smoke run)")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile on this CPU (adds about a minute; eval.compile auto is CUDA only)")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.points = 1, 2
    torch.set_num_threads(args.threads)
    os.environ["LANDSCAPE_BENCH_THREADS"] = str(args.threads)
    tune_cpu_malloc()  # as every CPU worker does (jobs.tile.set_cpu_threads)
    log = lambda s: print(s, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    log(f"CPU benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {load0:.1f} on {os.cpu_count()} CPUs")
    digits = data.digits()
    cifar = data.synthetic((3, 32, 32), n_train=512, n_test=1, num_classes=10, seed=0)
    cases = [case("digits_cnn", digits_cnn, digits.train, 10, args.points * 4, args.reps * 2, 4, (4, 16), log),
             case("resnet20", resnet20, cifar.train, 10, args.points, args.reps, 2, (4,), log)]
    probe = mode_probe(log)
    malloc = malloc_effect(2 if args.quick else 4, log)
    compiled = compile_effect([("digits_cnn", digits_cnn, digits.train, 10, args.points * 2),
                               ("resnet20", resnet20, cifar.train, 10, max(2, args.points // 2))],
                              args.reps, log) if args.compile else None
    curvature = curvature_rows(log)
    record = {"environment": environment(CPU) | {"loadavg_1min_at_start": load0}, "cases": cases,
              "vmap_probe": probe, "malloc": malloc, "compile": compiled, "curvature": curvature,
              "seconds": time.perf_counter() - t0}
    path = write_json(record, f"cpu-{time.strftime('%Y%m%d-%H%M%S')}.json")
    rows = [{**c, "forward_ms": c["forward_s"] * 1e3, "point_ms": c["per_point_s"] * 1e3,
             "ref_ms": c["reference_per_point_s"] * 1e3, "fold": c["fold_bn_speedup"],
             "cl": c["channels_last_speedup"], "plain": c["vs_plain_forward"],
             "vmap4": c["per_point_s"] / c["vmap_per_point_s"][4]} for c in cases]
    print()
    print(table(rows, [("model", "model", "s"), ("samples", "samples", "d"), ("mode", "mode", "s"),
                       ("batch_size", "batch", "d"), ("forward_ms", "fwd ms", ".1f"), ("point_ms", "ms/point", ".1f"),
                       ("efficiency", "efficiency", ".3f"), ("ref_ms", "ref ms/pt", ".1f"),
                       ("speedup_vs_reference", "vs ref", ".1f"), ("fold", "fold_bn x", ".2f"),
                       ("cl", "ch_last x", ".2f"), ("plain", "vs plain fwd", ".2f"),
                       ("vmap4", "vmap4 x", ".2f")]))
    print(f"malloc tuning (ResNet-20, 512 images, batch 512): {malloc['speedup']:.2f}x; "
          "auto mode on MLPs: " + ", ".join(f"{p['model']} -> {p['chosen']} x{p['points_per_batch']}" for p in probe))
    if compiled:
        print("torch.compile on this CPU: " + ", ".join(
            f"{c['model']} {c['speedup']:.2f}x after {c['setup_s']:.0f} s" for c in compiled))
    print("curvature (metrics=[loss, hessian], lambda_max and lambda_min, hessian.* defaults):")
    print(curvature_table(curvature))
    print(f"results: {path}  ({time.perf_counter() - t0:.0f} s)")
    print(f"engine efficiency: {min(c['efficiency'] for c in cases):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
