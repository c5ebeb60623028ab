"""The typed run configuration: parsed and checked once, by the driver from Hydra's dict and by the workers
from `run.yaml`; what changes a value (the fingerprint) is said field by field, next to each type.

Defaults live in `conf/` only: every field here is required, and `parse` refuses what it cannot trust with
one line naming the key. The launcher's own settings are parsed by its backend (`launch/backends/`).
"""
from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from landscape import data, directions
from landscape.checkpoint import Layout
from landscape.engine import EngineOptions, check_loss, check_precision
from landscape.engine.curvature import HessianOptions
from landscape.engine.options import VALUE_NEUTRAL
from landscape.errors import UserError, whole_number
from landscape.figures import FigureOptions, figure_options
from landscape.grid import Grid, make_grid, make_tiling
from landscape.plot import PlotOptions
from landscape.spec import importable, local_imports

RUN_FORMAT = 3  # run.yaml's layout and fingerprint recipe; a run of another format is refused with one line
# line: past a=1 BN variances extrapolate below 0; plane (through its three networks): 41 points hold 0 and 1
DEFAULT_RANGE = {"random": [-1.0, 1.0], "line": [0.0, 1.0], "plane": [-0.5, 1.5]}
KINDS = ("random", "pca", "line", "plane")
SPLITS = ("train", "test", "both")
VALUE = {"value": True}  # field metadata: this setting changes values on the surface (in the fingerprint)


@dataclass(frozen=True)
class GridSettings:
    """grid.*: dims resolved from the directions (line: 1, else 2); range None means the kind's default."""

    dims: int
    resolution: Any
    range: Any
    tile: Any

    def default_range(self, kind: str) -> Any:
        return DEFAULT_RANGE.get(kind, [-1.0, 1.0]) if self.range is None else self.range

    def grid(self, range_: Any) -> Grid:
        return make_grid(self.dims, self.resolution, range_)


@dataclass(frozen=True)
class DirectionSettings:
    """directions.*: random (norm, ignore, planes), line (start), pca (checkpoints, ignore), or the plane
    through three checkpoints (points, orthogonalize, norm, ignore)."""

    kind: str
    norm: str | None = None
    ignore: str | None = None
    start: str | None = None
    checkpoints: Any = None
    planes: Any = None
    points: Any = None
    orthogonalize: bool | None = None

    def seeds(self, seed: int) -> tuple[int, ...]:
        """Each plane's seed: `planes=K` gives seed .. seed+K-1, a list itself; one plane for other kinds."""
        if self.kind != "random":
            return (seed,)
        if isinstance(self.planes, (list, tuple)):
            return tuple(self.planes)
        return tuple(range(seed, seed + self.planes))


@dataclass(frozen=True)
class CheckpointSettings:
    """checkpoint.*: the file at the centre, and where its state_dict sits (`key`, `strip_prefix`); every
    checkpoint of the run (a line's start, a PCA trajectory) is read the same way."""

    path: str
    key: str | None
    strip_prefix: str | None

    @property
    def layout(self) -> Layout:
        return Layout(self.key, self.strip_prefix)


@dataclass(frozen=True)
class ModelSettings:
    """model.*: a factory (`_target_`) and its keyword arguments; `name` labels runs and plots; `path`, the
    folders its module is imported from (never a value: the module's source is in the fingerprint)."""

    name: str
    target: str
    options: Mapping[str, Any]
    path: tuple[str, ...] = ()

    def values(self) -> dict[str, Any]:
        return {"_target_": self.target, "name": self.name, **self.options}

    def spec(self) -> dict[str, Any]:
        """What `landscape.spec.instantiate` builds the model from."""
        return {**self.values(), "path": list(self.path)}

    def source_files(self) -> list[Path]:
        """The code of a factory outside this package: its module file and the `.py` files beside it that it
        imports (a new unrelated file there changes nothing); code elsewhere that it imports is not covered
        (README)."""
        if self.target.startswith("landscape."):
            return []
        importable(self.path)
        try:
            spec = importlib.util.find_spec(self.target.rpartition(".")[0])
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.origin or not Path(spec.origin).is_file():
            raise UserError(f"model._target_ {self.target}: cannot find the module it names; check its spelling, "
                            "and start the command in the module's folder or give model.path=FOLDER")
        module = Path(spec.origin).resolve()
        return [module, *local_imports(module, spec.parent)]


@dataclass(frozen=True)
class DataSettings:
    """data.*: the loader's name and options, which splits to evaluate, and an optional seeded subset."""

    name: str
    split: str
    subset: int | None
    options: Mapping[str, Any]

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "split": self.split, "subset": self.subset, **self.options}

    @property
    def splits(self) -> tuple[str, ...]:
        return data.split_names(self.split)


@dataclass(frozen=True)
class RunSettings:
    """One surface run, checked: every field but `device`, `plot`, `figures`, `launcher` and `run_dir` changes
    values."""

    checkpoint: CheckpointSettings = field(metadata=VALUE)
    seed: int = field(metadata=VALUE)
    loss: str = field(metadata=VALUE)
    precision: str = field(metadata=VALUE)
    grid: GridSettings = field(metadata=VALUE)
    directions: DirectionSettings = field(metadata=VALUE)
    model: ModelSettings = field(metadata=VALUE)
    data: DataSettings = field(metadata=VALUE)
    engine: EngineOptions = field(metadata=VALUE)
    hessian: HessianOptions | None = field(metadata=VALUE)  # metrics=[loss, hessian]; None: loss and accuracy only
    device: str
    plot: PlotOptions
    figures: FigureOptions
    launcher: Mapping[str, Any]
    run_dir: str | None

    @property
    def origin(self) -> str:
        """The checkpoint at a = 0: a line starts at `directions.start`, every other kind at `checkpoint`."""
        return self.directions.start if self.directions.kind == "line" else self.checkpoint.path

    @property
    def planes(self) -> int:
        return len(self.directions.seeds(self.seed))


KEYS = {"checkpoint": tuple(f.name for f in fields(CheckpointSettings)), "seed": None, "loss": None,
        "precision": None, "model": None, "data": None, "directions": None, "launcher": None, "plot": None,
        "grid": tuple(f.name for f in fields(GridSettings)), "run": ("dir",),
        "eval": None, "figures": None,
        "metrics": None, "hessian": None}  # None: any key (checked by its own part), or a plain value


def parse(cfg: Mapping[str, Any]) -> RunSettings:
    """Hydra's resolved dict (or run.yaml's `config`) as RunSettings; a UserError names the first bad key."""
    _known_keys(cfg)
    d = _directions(cfg["directions"])
    seed = whole_number(cfg["seed"], "seed", 0)
    return RunSettings(
        checkpoint=_checkpoint(cfg["checkpoint"]), seed=seed, loss=_loss(cfg["loss"]),
        precision=_precision(cfg["precision"]), grid=_grid(cfg["grid"], d.kind, len(d.seeds(seed)), data.split_names(cfg["data"]["split"])), directions=d,
        model=_model(cfg["model"]), data=_data(cfg["data"]), engine=EngineOptions.parse(_engine_keys(cfg["eval"])),
        hessian=_hessian(cfg["metrics"], cfg["hessian"], data.split_names(cfg["data"]["split"])),
        device=str(cfg["eval"].get("device", "auto")), plot=plot_options(cfg.get("plot") or {}),
        figures=figure_options(cfg.get("figures") or {}), launcher=dict(cfg.get("launcher") or {}),
        run_dir=(cfg.get("run") or {}).get("dir"))


def value_items(settings: RunSettings) -> dict[str, Any]:
    """The flattened settings that change values, keyed as on the command line (`grid.tile`, `eval.mode`)."""
    out: dict[str, Any] = {}
    for f in fields(settings):
        if not f.metadata.get("value"):
            continue
        value = getattr(settings, f.name)
        prefix = "eval" if f.name == "engine" else f.name
        if isinstance(value, EngineOptions):
            out |= {f"eval.{k.name}": getattr(value, k.name) for k in fields(value) if k.name not in VALUE_NEUTRAL}
        elif isinstance(value, ModelSettings):
            out |= {f"{prefix}.{k}": v for k, v in value.values().items()}
        elif isinstance(value, DataSettings):  # how many processes decode is not a value
            out |= {f"{prefix}.{k}": v for k, v in value.spec().items() if k not in data.NEUTRAL}
        elif hasattr(value, "__dataclass_fields__"):
            out |= {f"{prefix}.{k.name}": getattr(value, k.name) for k in fields(value)}
        else:
            out[prefix] = value
    return {k: _plain(v) for k, v in out.items() if v is not None}


def differences(old: RunSettings, new: RunSettings) -> list[str]:
    """`key: old -> new` for each value-changing setting that differs."""
    a, b = value_items(old), value_items(new)
    return [f"{k}: {a.get(k, '<unset>')} -> {b.get(k, '<unset>')}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def plot_options(settings: Mapping[str, Any]) -> PlotOptions:
    """`plot.*` checked and converted, before any work: landscape-surface and landscape-plot share this."""
    known = [f.name for f in fields(PlotOptions)]
    unknown = [k for k in settings if k not in known]
    if unknown:
        raise UserError(f"plot.{unknown[0]} is unknown: use one of {', '.join(known)}")
    return PlotOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()
                          if v is not None or k == "clip"})


def _known_keys(cfg: Mapping[str, Any]) -> None:
    """A key added with `+key=...` that nothing reads would be ignored silently: refuse it, naming the closest."""
    known = [*KEYS, *(f"{k}.{sub}" for k, subs in KEYS.items() for sub in subs or ())]
    added = [k for k in cfg if k not in KEYS]
    added += [f"{k}.{sub}" for k, subs in KEYS.items() if subs for sub in (cfg.get(k) or {}) if sub not in subs]
    if added:
        close = difflib.get_close_matches(added[0], known, n=1)
        raise UserError(f"unknown setting {added[0]}" + (f" (did you mean {close[0]}?)" if close else "")
                        + ": nothing reads it; every key and its default is in conf/surface.yaml and its groups")


def _plain(value: Any) -> Any:
    """Tuples as lists and mappings as dicts, so a value compares equal to its YAML round trip."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _loss(loss: Any) -> str:
    check_loss(loss)
    return loss


def _precision(precision: Any) -> str:
    check_precision(precision)
    return precision


def _directions(d: Mapping[str, Any]) -> DirectionSettings:
    kind = d.get("kind")
    if kind not in KINDS:
        raise UserError(f"directions '{kind}' is unknown: use random, pca, line or plane")
    known = {"random": ("norm", "ignore", "planes"), "line": ("start",), "pca": ("checkpoints", "ignore"),
             "plane": ("points", "orthogonalize", "norm", "ignore")}[kind]
    unknown = sorted(set(d) - {"kind", *known})
    if unknown:
        raise UserError(f"unknown setting directions.{unknown[0]} for directions={kind} "
                        f"(it takes {', '.join('directions.' + k for k in known)})")
    if kind in ("random", "plane"):
        directions.check_normalization(d["norm"], d["ignore"])
    if kind == "random":
        _planes(d["planes"])
    if kind == "plane":
        _points(d["points"])
        if not isinstance(d["orthogonalize"], bool):
            raise UserError(f"directions.orthogonalize is {d['orthogonalize']!r}: use true or false")
    if kind == "pca":
        directions.check_normalization("none", d["ignore"])
    return DirectionSettings(kind=kind, **{k: d[k] for k in known})


def _planes(planes: Any) -> None:
    """directions.planes: a count K >= 1, or a list of distinct seeds."""
    if isinstance(planes, (list, tuple)):
        seeds = [whole_number(p, "directions.planes (a seed)", 0) for p in planes]
        if not seeds or len(set(seeds)) != len(seeds):
            raise UserError(f"directions.planes is {list(planes)}: give a count, or a list of distinct seeds")
    else:
        whole_number(planes, "directions.planes", 1, ", or a list of seeds")


def _points(points: Any) -> None:
    """directions.points: the two checkpoints w1, w2 that span the plane with the centre checkpoint w0."""
    if not isinstance(points, (list, tuple)) or len(points) != 2 or not all(isinstance(p, str) for p in points):
        raise UserError(f"directions.points is {points!r}: give two checkpoint files, "
                        "directions.points='[w1.pt,w2.pt]' (the centre checkpoint is the third)")


def _grid(g: Mapping[str, Any], kind: str, planes: int, splits: tuple[str, ...]) -> GridSettings:
    """grid.*: every value checked by building the grid once (the tiling's bounds included); `splits`: those
    evaluated, whose maps the surface holds."""
    dims = g["dims"]
    if kind == "line" and dims not in (None, 1):
        raise UserError("directions=line gives a 1D curve: leave grid.dims unset or set it to 1")
    if kind in ("pca", "plane") and dims not in (None, 2):
        raise UserError(f"directions={kind} gives a 2D plane: leave grid.dims unset or set it to 2")
    settings = GridSettings((1 if kind == "line" else 2) if dims is None else dims, g["resolution"], g["range"],
                            g["tile"])
    grid = make_grid(settings.dims, settings.resolution, settings.default_range(kind), splits)
    check_tiling(grid, settings.tile, planes)  # fitted ranges: later
    return settings


def check_tiling(grid: Grid, tile: Any, planes: int = 1) -> None:
    """The tiles of `grid` on each plane: made lazily, so this checks `grid.tile` and the bounds at no cost."""
    make_tiling(grid, tile, planes)


def _checkpoint(c: Mapping[str, Any]) -> CheckpointSettings:
    for key in ("key", "strip_prefix"):
        if c.get(key) is not None and not (isinstance(c[key], str) and c[key]):
            raise UserError(f"checkpoint.{key} is {c[key]!r}: give a name, or null")
    return CheckpointSettings(path=str(c["path"]), key=c.get("key"), strip_prefix=c.get("strip_prefix"))


def _model(m: Mapping[str, Any]) -> ModelSettings:
    if not m.get("_target_"):
        raise UserError("model._target_ is not set: name a factory, e.g. model._target_=mypkg.nets.make_net")
    options = {k: v for k, v in m.items() if k not in ("_target_", "name", "path")}
    path = m.get("path") or ()
    return ModelSettings(name=str(m.get("name") or m["_target_"].rpartition(".")[2]), target=str(m["_target_"]),
                         options=options, path=tuple(str(p) for p in ([path] if isinstance(path, str) else path)))


def _data(d: Mapping[str, Any]) -> DataSettings:
    if d.get("split") not in SPLITS:
        raise UserError(f"unknown split '{d.get('split')}': use train, test or both")
    data.check_subset(d.get("subset"))
    if d.get("name") not in data.LOADERS:
        raise UserError(f"unknown data '{d.get('name')}': choose one of {', '.join(data.LOADERS)}")
    options = {k: v for k, v in d.items() if k not in ("name", "split", "subset")}
    return DataSettings(name=d["name"], split=d["split"], subset=d.get("subset"), options=options)


METRICS = ("loss", "hessian")


def _hessian(metrics: Any, options: Mapping[str, Any], splits: tuple[str, ...]) -> HessianOptions | None:
    """`metrics` (loss always; hessian adds curvature maps) and, where hessian is asked, `hessian.*` checked."""
    asked = [metrics] if isinstance(metrics, str) else list(metrics or [])
    unknown = [m for m in asked if m not in METRICS]
    if unknown or "loss" not in asked:
        raise UserError(f"metrics={asked}: use [loss] or [loss, hessian] (loss and accuracy are always measured)")
    if "hessian" not in asked:
        return None
    h = HessianOptions.parse(options)
    if h.split not in splits:
        given = "both" if len(splits) > 1 else splits[0]
        raise UserError(f"hessian.split={h.split} is not evaluated (data.split={given}): "
                        f"use one of {', '.join(splits)}")
    return h


def _engine_keys(ev: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ev.items() if k != "device"}
