"""The run directory as the compute node sees it: resolved config, directions, grid, tiles."""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from landscape import directions, surface
from landscape.errors import UserError
from landscape.grid import Grid, Tile, make_tiles


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
        return yaml.safe_load(self.config_file.read_text())

    @property
    def config(self) -> dict[str, Any]:
        return self.saved["config"]

    @property
    def fingerprint(self) -> str:
        return self.saved["fingerprint"]

    @cached_property
    def grid(self) -> Grid:
        with surface.h5open(self.directions_file) as f:
            return Grid(f["xcoordinates"][()], f["ycoordinates"][()] if "ycoordinates" in f else None)

    @cached_property
    def tiles(self) -> list[Tile]:
        return make_tiles(self.grid, self.config["grid"]["tile"])

    def tile_file(self, tile: Tile) -> Path:
        return self.path / "tiles" / f"{tile.id:05d}.h5"

    def read_tile(self, tile: Tile) -> tuple[dict | None, str]:
        return surface.read_tile(self.tile_file(tile), tile, self.fingerprint)

    def missing(self) -> list[Tile]:
        """Tiles without a complete file of this run: the whole plan of a resume."""
        return [t for t in self.tiles if self.read_tile(t)[0] is None]

    def load_directions(self, names: list[str] | None = None) -> directions.Directions:
        return directions.load(self.directions_file, names)


def checkpoint_epoch(path: Path) -> int:
    """Epoch number in a name like `epoch_012.pt` (the order PCA uses)."""
    match = re.search(r"(\d+)(?=\.\w+$)", path.name)
    return int(match.group(1)) if match else -1
