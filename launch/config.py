"""Compose configs with Hydra from the repo's absolute `conf/` (console scripts run from any cwd)."""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from landscape import data
from landscape.engine.options import VALUE_NEUTRAL
from landscape.errors import UserError, first_line

# conf/ at the repo root (a checkout, an editable install), or installed as package data launch/conf (pip install .)
_HERE = Path(__file__).resolve().parent
CONF_DIR = _HERE / "conf" if (_HERE / "conf").is_dir() else _HERE.parent / "conf"
# Settings that never change a value (how and where it runs, plots): a resume takes them from the command,
# not from the saved run. train.overwrite says how to treat old checkpoints, not what is trained.
VOLATILE = ("launcher", "plot", "figures", "run", "eval.device", "train.overwrite",
            *(f"eval.{k}" for k in VALUE_NEUTRAL))


def load(name: str, overrides: list[str]) -> dict[str, Any]:
    """Compose `conf/<name>.yaml` with overrides, set the sizes left to the data, and resolve every interpolation
    (`model.num_classes: ${data.num_classes}` then reads the inferred count, and the saved config records it)."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=name, overrides=overrides)
        missing = _missing_keys(cfg)
        if missing:
            raise UserError(f"missing required setting: {', '.join(dict.fromkeys(missing))} "
                            f"(give it on the command line, e.g. {missing[0]}=...)")
        if "data" in cfg:
            for key, value in data.inferred_sizes(OmegaConf.to_container(cfg.data, resolve=True)).items():
                cfg.data[key] = value
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(_unknown_choice(err) or _unknown_key(name, overrides, err) or first_line(err)) from err


def _unknown_choice(err: Exception) -> str | None:
    """For a group choice that has no conf file (Hydra: "Could not find 'launcher/lsf'"): the ones that exist."""
    match = re.search(r"Could not find '(\w+)/([^']+)'", str(err))
    if not match or not (CONF_DIR / match[1]).is_dir():
        return None
    group, choice = match[1], match[2]
    known = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    close = difflib.get_close_matches(choice, known, n=1)
    return (f"{group} '{choice}' is unknown" + (f" (did you mean {close[0]}?)" if close else "")
            + f": use one of {', '.join(known)} (conf/{group}/)")


def _unknown_key(name: str, overrides: list[str], err: Exception) -> str | None:
    """For a mistyped key (Hydra: "Could not override 'grid.tlie'"): name it, and the closest known key."""
    match = re.match(r"Could not override '([^']+)'", str(err))
    if not match:
        return None
    key = match[1]
    groups = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0] and o.split("=", 1)[0] != key]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            known = list(_flatten(OmegaConf.to_container(compose(config_name=name, overrides=groups))))
    except (HydraException, OmegaConfBaseException):
        known = []
    known += sorted({k.rsplit(".", n)[0] for k in known for n in range(1, k.count(".") + 1)})  # groups too
    close = difflib.get_close_matches(key, known, n=1)
    return (f"unknown setting {key}" + (f" (did you mean {close[0]}?)" if close else "")
            + f": every key and its default is in conf/{name}.yaml and conf/<group>/ (+model.KEY=... passes a new "
            "keyword to a model's factory)")


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
