"""The lazy tiling and its bounds; tile files planned from their headers alone; non-finite points reported."""
import contextlib
import io
import shutil

import h5py
import numpy as np
import pytest

from conftest import one_error_line, read_surface
from jobs.reduce import reduce
from jobs.run import RunDir
from landscape.errors import UserError
from landscape.grid import Tile, Tiling, make_grid, make_tiling
from launch import status, surface

# rows y = -1, 3.3e29, 6.7e29, 1e30, one tile each: weights that far out overflow fp32, the first row is finite
DIVERGING = ["grid.resolution=[4,4]", "grid.range=[[-1,1],[-1,1e30]]", "grid.tile=[4,1]", "launcher.workers=1"]


def test_resolution_100000_is_refused_before_anything_is_built(base_args, tmp_path, capsys):
    with pytest.raises(UserError, match=r"10,000,000,000 points \(100000x100000\) are too many to hold.*"
                                        r"80\.0 GB each, 320\.0 GB.*coarser grid\.resolution"):
        make_grid(2, 100000, 1)
    for extra in (["launcher.dry_run=true"], []):
        run = tmp_path / "D"
        assert surface.main([*base_args, "grid.resolution=100000", *extra, f"run.dir={run}"]) == 2
        one_error_line(2, capsys.readouterr().err, "grid.resolution is 100000: 10,000,000,000 points")
        assert not run.exists()


def test_too_many_tile_files_are_refused_with_a_tile_size_that_fits():
    with pytest.raises(UserError, match=r"grid.tile is 1: 1,000,000 points in tiles of 1 make 1,000,000 tile files.*"
                                        r"at most 100,000: use a larger grid.tile \(grid.tile=4 or more\)"):
        make_tiling(make_grid(2, 1000, 1), 1)
    assert len(make_tiling(make_grid(2, 1000, 1), 4)) == 250 * 250
    with pytest.raises(UserError, match=r"grid.tile=100 or more"):
        make_tiling(make_grid(1, 10**7, 1), 8)


def test_a_huge_tiling_answers_at_once_with_exact_ranges():
    """4e8 one-point tiles (as a list: tens of GB): length and last tile are arithmetic on the id."""
    ones = Tiling(20000, 20000, 1, 1)
    assert len(ones) == 400_000_000
    assert ones[len(ones) - 1] == Tile(399_999_999, 19999, 20000, 19999, 20000)
    odd = Tiling(20000, 20000, 7, 3)  # ragged last column (20000 = 2857*7 + 1) and row (20000 = 6666*3 + 2)
    assert len(odd) == 2858 * 6667
    assert odd[len(odd) - 1] == Tile(2858 * 6667 - 1, 19999, 20000, 19998, 20000)
    assert odd[2858] == Tile(2858, 0, 7, 3, 6)  # the second row of tiles begins
    with pytest.raises(IndexError, match="ids 0 to 19054285"):
        odd[len(odd)]


@pytest.fixture(scope="module")
def diverging(trained, tmp_path_factory):
    """A real run whose rows y > 0 diverge: (run dir, the driver's stdout)."""
    run = tmp_path_factory.mktemp("diverging") / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert surface.main(["model=digits_cnn", "data=digits", f"checkpoint={trained / 'last.pt'}", *DIVERGING,
                             f"run.dir={run}"]) == 0
    return run, out.getvalue()


def test_nonfinite_points_are_reported_by_the_driver_status_and_surface(diverging):
    run, stdout = diverging
    s = read_surface(run / "surface.h5")
    assert np.isfinite(s["train_loss"][0]).all() and not np.isfinite(s["train_loss"][1:]).any()
    where = "non-finite loss: 12 of 16 points, in tiles 1, 2, 3 (x from -1 to 1, y from 3.33333e+29 to 1e+30)"
    assert f"warning: {where}\n" in stdout
    assert where in status.summary(RunDir(run)).splitlines()
    with h5py.File(run / "surface.h5", "r", locking=False) as f:
        assert f.attrs["points_nonfinite"] == 12
    with h5py.File(run / "tiles" / "00000.h5", "r", locking=False) as f:
        assert f.attrs["nonfinite"] == 0


def test_planning_and_status_read_no_values_reduce_reads_each_once(diverging, monkeypatch):
    run = RunDir(diverging[0])
    run.grid  # noqa: B018 -- the coordinates (directions.h5) are read once; count only tile files
    reads = []
    real = h5py.Dataset.__getitem__

    def counting(self, key):
        if "/tiles/" in self.file.filename:
            reads.append((self.file.filename, self.name))
        return real(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counting)
    assert run.missing() == []
    assert "4 done" in status.summary(run)
    assert reads == []
    reduce(run.path)
    assert sorted(reads) == sorted({(str(run.tile_file(t)), f"/{k}") for t in run.tiles for k in ("train_loss",
                                                                                                    "train_acc")})


def _damage_values(path):
    """Rewrite a tile with gzip-compressed datasets and garble one's compressed bytes: header sound, values not."""
    with h5py.File(path, "r", locking=False) as f:
        attrs, values = dict(f.attrs), {k: f[k][()] for k in f.keys()}
    with h5py.File(path, "w", locking=False) as f:
        for k, v in values.items():
            f.create_dataset(k, data=v, chunks=v.shape, compression="gzip")
        f.attrs.update(attrs)
        chunk = f["train_loss"].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(chunk.byte_offset)
        fh.write(b"\xff" * chunk.size)


def test_damaged_values_under_a_sound_header_count_as_done_and_reduce_names_the_file(diverging, tmp_path, capsys):
    path = shutil.copytree(diverging[0], tmp_path / "run")
    run = RunDir(path)
    _damage_values(run.tile_file(run.tiles[2]))
    assert run.missing() == []  # planning reads headers only: the damage shows when values are read
    with pytest.raises(UserError, match=r"tile file .*00002\.h5 has a complete header but unreadable values.*"
                                        r"delete it and run the same command again"):
        reduce(path)
    assert surface.main([f"run.dir={path}", "launcher=none"]) == 2
    one_error_line(2, capsys.readouterr().err, "00002.h5 has a complete header but unreadable values")


def test_a_tile_without_its_nonfinite_count_is_recomputed(diverging, tmp_path):
    path = shutil.copytree(diverging[0], tmp_path / "run")
    run = RunDir(path)
    with h5py.File(run.tile_file(run.tiles[1]), "a", locking=False) as f:
        del f.attrs["nonfinite"]
    state = run.tile_state(run.tiles[1])
    assert not state.done and state.why == "no count of non-finite points (written by an older version)"
    assert [t.id for t in run.missing()] == [1]
