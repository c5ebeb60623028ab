"""Compose configs with Hydra from the repo's absolute `conf/` (console scripts run from any cwd)."""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from landscape import data
from landscape.engine.options import VALUE_NEUTRAL
from landscape.errors import UserError, first_line
from landscape.models.zoo import WEIGHT_NAME

# conf/ at the repo root (a checkout, an editable install), or installed as package data launch/conf (pip install .)
_HERE = Path(__file__).resolve().parent
CONF_DIR = _HERE / "conf" if (_HERE / "conf").is_dir() else _HERE.parent / "conf"
# Files and folders: made absolute where typed (launch/cli.py), and passed to Hydra quoted, so that any name
# (=, commas, quotes, spaces, non-ASCII) is one string. `checkpoint=PATH` is short for checkpoint.path=PATH.
PATH_KEYS = ("checkpoint", "checkpoint.path", "directions.start", "directions.checkpoints", "directions.points",
             "data.path", "data.root", "data.labels", "data.cache_dir", "plot.dir", "model.path", "model.weights")
# Short spellings a user may type for a key (`checkpoint=PATH` sets checkpoint.path): full_key / typed_key.
SHORT_KEYS = {"checkpoint": "checkpoint.path"}
QUOTED_KEYS = (*PATH_KEYS, "run.dir")
# Settings that never change a value (how and where it runs, plots): a resume takes them from the command,
# not from the saved run. train.overwrite says how to treat old checkpoints, not what is trained; model.path
# where a model's code is found (its source is compared by contents).
VOLATILE = ("launcher", "plot", "figures", "run", "eval.device", "train.overwrite", "model.path",
            *(f"eval.{k}" for k in VALUE_NEUTRAL), *(f"data.{k}" for k in data.NEUTRAL))


def load(name: str, overrides: list[str]) -> dict[str, Any]:
    """Compose `conf/<name>.yaml` with overrides, set the sizes left to the data, and resolve every interpolation
    (`model.num_classes: ${data.num_classes}` then reads the inferred count, and the saved config records it)."""
    overrides = [_hydra_safe(o) for o in overrides]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=name, overrides=overrides)
        if "model" in cfg:  # recorded in the run: workers, array tasks and MPI ranks import from the same folders
            cfg.model.path = import_dirs(cfg.model.get("path"))
        missing = [typed_key(m) for m in _missing_keys(cfg)]
        if missing:
            raise UserError(f"missing required setting: {', '.join(dict.fromkeys(missing))} "
                            f"(give it on the command line, e.g. {missing[0]}=...)")
        if "data" in cfg:
            for key, value in data.inferred_sizes(OmegaConf.to_container(cfg.data, resolve=True)).items():
                cfg.data[key] = value
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(_unknown_choice(err) or _list_without_brackets(err) or _unknown_key(name, overrides, err)
                        or first_line(err)) from err


def key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def full_key(key: str) -> str:
    """A key as the config spells it (`checkpoint` -> `checkpoint.path`)."""
    return SHORT_KEYS.get(key, key)


def typed_key(key: str) -> str:
    """A key as users type it (`checkpoint.path` -> `checkpoint`)."""
    return next((short for short, full in SHORT_KEYS.items() if full == key), key)


def values_of(value: str) -> str | list[str]:
    """A path setting's value as typed: one path, or a `[a,b]` list of them; Hydra quotes ('a,b.pt') are removed,
    and a value Hydra cannot read (a comma, `=` or a non-ASCII letter, unquoted) is one path as it stands."""
    try:
        parsed = OverridesParser.create().parse_override(f"k={value}").value()
    except (HydraException, OmegaConfBaseException):
        parsed = None
    if isinstance(parsed, list) and all(isinstance(v, str) for v in parsed):
        return parsed
    return parsed if isinstance(parsed, str) else value


def quoted(value: str) -> str:
    """`value` as one Hydra string, whatever it holds: single-quoted, with quotes, backslashes before quotes and
    at the end, and `${` escaped (Hydra's rules for quoted values)."""
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), value).replace("${", "\\${") + "'"


def hydra_value(values: str | list[str]) -> str:
    """One path, or a list of them, as a Hydra value that reads back as exactly those strings."""
    return quoted(values) if isinstance(values, str) else "[" + ",".join(map(quoted, values)) + "]"


def _hydra_safe(override: str) -> str:
    """A path setting quoted for Hydra, its key spelled in full (full_key); other overrides as given."""
    if "=" not in override or key_of(override) not in QUOTED_KEYS:
        return override
    key, value = override.split("=", 1)
    key = key.removesuffix(key_of(override)) + full_key(key_of(override))
    if value.startswith("${") or value in ("null", "???", ""):  # an interpolation: Hydra's to resolve
        return f"{key}={value}"
    return f"{key}={hydra_value(values_of(value))}"


def import_dirs(path: Any) -> list[str]:
    """`model.path` (a folder or a list of them) and the folder the command was started in, absolute: where a
    model's `_target_` is imported from, here and on every node."""
    given = [] if path is None else [path] if isinstance(path, str) else list(path)
    return list(dict.fromkeys(str(Path(p).expanduser().absolute()) for p in [*given, Path.cwd()]))


def choices(group: str) -> list[str]:
    """The choices of a conf group (`model` -> mlp, resnet20, ...): one conf/<group>/<name>.yaml each."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _unknown_choice(err: Exception) -> str | None:
    """For a group choice that has no conf file (Hydra: "Could not find 'launcher/lsf'"): the ones that exist."""
    match = re.search(r"Could not find '(\w+)/([^']+)'", str(err))
    if not match or not (CONF_DIR / match[1]).is_dir():
        return None
    group, choice = match[1], match[2]
    known = choices(group)
    close = difflib.get_close_matches(choice, known, n=1)
    return (f"{group} '{choice}' is unknown" + (f" (did you mean {close[0]}?)" if close else "")
            + f": use one of {', '.join(known)} (conf/{group}/)")


def _list_without_brackets(err: Exception) -> str | None:
    """For `metrics=loss,hessian` (Hydra: "Ambiguous value for argument", a sweep to Hydra): how to write a list."""
    match = re.match(r"Ambiguous value for argument '([^=']+)=([^']*)'", str(err))
    if not match:
        return None
    key, value = match[1], match[2]
    return f"{key}={value}: a list is written in brackets and quoted in the shell: '{key}=[{value}]'"


def _unknown_key(name: str, overrides: list[str], err: Exception) -> str | None:
    """For a mistyped key (Hydra: "Could not override 'grid.tlie'"): name it, and the closest known key."""
    match = re.match(r"Could not override '([^']+)'", str(err))
    if not match:
        return None
    key = match[1]
    groups = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0] and o.split("=", 1)[0] != key]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=name, overrides=groups, return_hydra_config=True)
        choices = dict(cfg.hydra.runtime.choices)
        known = [k for k in _flatten(OmegaConf.to_container(cfg)) if not k.startswith("hydra.")]
    except (HydraException, OmegaConfBaseException):
        known, choices = [], {}
    elsewhere = _other_choice(key, choices)
    if elsewhere:
        return elsewhere
    known += sorted({k.rsplit(".", n)[0] for k in known for n in range(1, k.count(".") + 1)})  # groups too
    close = difflib.get_close_matches(key, known, n=1)
    return (f"unknown setting {key}" + (f" (did you mean {close[0]}?)" if close else "")
            + f": every key and its default is in conf/{name}.yaml and conf/<group>/ (+model.KEY=... passes a new "
            "keyword to a model's factory)")


def _other_choice(key: str, choices: dict[str, Any]) -> str | None:
    """For a key of another choice of its group (directions.planes under directions=plane): which choices take
    it, and the keys that set this choice apart."""
    group, _, rest = key.partition(".")
    if not rest or choices.get(group) is None or not (CONF_DIR / group).is_dir():
        return None
    keys = {p.stem: list(_flatten(OmegaConf.to_container(OmegaConf.load(p))))
            for p in (CONF_DIR / group).glob("*.yaml")}
    owners = sorted(choice for choice, ks in keys.items() if rest in ks)
    if not owners:
        return None
    chosen = choices[group]
    own = [f"{group}.{k}" for k in keys[chosen] if not all(k in ks for ks in keys.values())]
    takes = f"which takes {', '.join(own)}" if 0 < len(own) <= 6 else f"its settings: conf/{group}/{chosen}.yaml"
    return f"{key} is a setting of {' or '.join(f'{group}={c}' for c in owners)}, not of {group}={chosen} ({takes})"


def _missing_keys(cfg, prefix: str = "") -> list[str]:
    """Mandatory values (???) still unset, among the keys something will read."""
    out = []
    for key in cfg:
        path = f"{prefix}{key}"
        if OmegaConf.is_missing(cfg, key):
            out.append(path)
        elif OmegaConf.is_dict(cfg[key]):
            out += _missing_keys(cfg[key], path + ".")
    return out


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def volatile(key: str) -> bool:
    """True for settings that never change a value on the surface (how and where it runs, plots)."""
    return any(key == p or key.startswith(p + ".") for p in VOLATILE)


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for each setting of two trainings that differs, but the volatile ones."""
    a, b = ({k: v for k, v in _flatten(c).items() if not volatile(k)} for c in (old, new))
    return [f"{k}: {a.get(k, '<unset>')} -> {b.get(k, '<unset>')}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]
