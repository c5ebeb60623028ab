"""The run directory as the compute node sees it: resolved config, directions, grid, tiles."""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import yaml

from landscape import directions, surface
from landscape.errors import UserError, first_line
from landscape.grid import Grid, Tile, Tiling, make_tiling

from .settings import RUN_FORMAT, RunSettings, parse


@dataclass
class RunDir:
    """Paths and facts of one run; every node derives the same tiles from the same files."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def config_file(self) -> Path:
        return self.path / "run.yaml"

    @property
    def directions_file(self) -> Path:
        return self.path / "directions.h5"

    @property
    def surface_file(self) -> Path:
        return self.path / "surface.h5"

    @cached_property
    def saved(self) -> dict[str, Any]:
        """run.yaml: `config` (resolved), `fingerprint`, `overrides`, `created`."""
        if not self.config_file.is_file():
            raise UserError(f"{self.path} is not a run directory (no run.yaml)")
        try:
            saved = yaml.safe_load(self.config_file.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise self._broken(self.config_file, f"is not readable YAML ({first_line(err)})") from err
        if not (isinstance(saved, dict) and isinstance(saved.get("config"), dict)
                and isinstance(saved.get("fingerprint"), str) and isinstance(saved.get("overrides", []), list)):
            raise self._broken(self.config_file, "is empty or lacks its config and fingerprint")
        if saved.get("format") != RUN_FORMAT:
            raise UserError(f"{self.path} was made by another version of landscape (run format "
                            f"{saved.get('format', 1)}, this one reads {RUN_FORMAT}): its tiles cannot be checked "
                            f"against today's inputs; use a new run.dir, or delete {self.path} to compute it anew")
        return saved

    @cached_property
    def settings(self) -> RunSettings:
        """The saved configuration, parsed and checked as the driver did."""
        return parse(self.config)

    def _broken(self, file: Path, why: str) -> UserError:
        """A run file that cannot be read: nothing here can be trusted or resumed without it."""
        return UserError(f"{file} {why}: restore it, or delete {self.path} and run landscape-surface "
                         "again to start this run anew")

    @contextmanager
    def _reading_directions(self) -> Iterator[None]:
        """Turn a missing or truncated directions.h5 into one clear line instead of an h5py traceback."""
        if not self.directions_file.is_file():
            raise self._broken(self.directions_file, "is missing")
        try:
            yield
        except (OSError, KeyError, ValueError) as err:
            raise self._broken(self.directions_file, f"is unreadable ({first_line(err)})") from err

    @property
    def config(self) -> dict[str, Any]:
        return self.saved["config"]

    @property
    def fingerprint(self) -> str:
        return self.saved["fingerprint"]

    @property
    def key(self) -> str:
        """The fingerprint of the settings and inputs, without the directions (inputs.key)."""
        return self.saved["key"]

    @cached_property
    def grid(self) -> Grid:
        with self._reading_directions(), surface.h5open(self.directions_file) as f:
            return Grid(f["xcoordinates"][()], f["ycoordinates"][()] if "ycoordinates" in f else None)

    @cached_property
    def tiles(self) -> Tiling:
        tile = self.settings.grid.tile  # first: run.yaml names a run directory that is not one
        return make_tiling(self.grid, tile, self.settings.planes)

    def tile_file(self, tile: Tile) -> Path:
        return self.path / "tiles" / f"{tile.id:05d}.h5"

    def tile_state(self, tile: Tile) -> surface.TileState:
        """Whether a tile is done, with a loss for every split it evaluates: its file's header, no values read."""
        return surface.tile_state(self.tile_file(tile), tile, self.fingerprint, self.settings.data.splits)

    def read_tile(self, tile: Tile) -> surface.TileValues:
        """The values of a tile `tile_state` found done (the reducer reads each once)."""
        return surface.read_tile(self.tile_file(tile))

    def missing(self) -> list[Tile]:
        """Tiles without a complete file of this run: the whole plan of a resume."""
        return [t for t in self.tiles if not self.tile_state(t).done]

    def load_directions(self, names: list[str] | None = None, tensors: bool = True,
                        plane: int = 0) -> directions.Directions:
        with self._reading_directions():
            return directions.load(self.directions_file, names, tensors, plane)


def checkpoint_epoch(path: Path) -> int:
    """Epoch number in a name like `epoch_012.pt` (the order PCA uses)."""
    match = re.search(r"(\d+)(?=\.\w+$)", path.name)
    return int(match.group(1)) if match else -1
