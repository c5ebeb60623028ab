"""Seconds per point of one 64-point tile (digits CNN, and an MLP) with whichever `landscape` is first on
sys.path, one thread, best of 3: run it alternately against two checkouts to compare engines side by side,
e.g. `for i in 1 2 3 4; do for p in OLD NEW; do PYTHONPATH=$p python bench/engine_ab.py; done; done`
from a folder outside both (the old engine is `landscape.evaluate`, the new `landscape.engine`)."""
import sys, time, json
import numpy as np, torch
torch.set_num_threads(1)
from landscape import data, directions, models
try:
    from landscape.engine import Evaluator
except ImportError:
    from landscape.evaluate import Evaluator
out = {}
for name, make in (("digits_cnn", lambda: models.digits_cnn()), ("mlp", lambda: models.mlp(64, 10, [256, 256]))):
    torch.manual_seed(0)
    model = make()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_parameters()]
    dirs = directions.random_directions(names, [state[n] for n in names], 2, "filter", "biasbn", 0)
    ds = data.digits()
    ev = Evaluator(model, state, dirs, {"train": ds.train}, 10)
    g = np.linspace(-1, 1, 8)
    coords = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    ev.evaluate(coords[:2])
    best = min((lambda t0: (ev.evaluate(coords), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(3))
    out[name] = best / len(coords)
print(json.dumps(out))
