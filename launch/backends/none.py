"""launcher=none: compute nothing; the driver reduces and plots what the tiles hold."""
from __future__ import annotations

from . import Backend
from .settings import plain

BACKEND = Backend(name="none", submits=False, workers_here=False, every_rank=False, computes=False,
                  check=plain, run=lambda run, tile_ids, settings: None)
