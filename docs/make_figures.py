"""Remake the README's figures (docs/*.png) from the built-in digits data with the real commands:
`.venv/bin/python docs/make_figures.py [WORK_DIR]` (a few minutes on a CPU; WORK_DIR keeps the runs, default a
temporary folder). The interactive view's picture needs chromium (else it is left as it was)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from launch import plots, surface, train

DOCS = Path(__file__).resolve().parent
SMALL = ["+plot.dpi=70", "plot.levels=20"]
COMMANDS = {train.main: "landscape-train", surface.main: "landscape-surface", plots.main: "landscape-plot"}


def run(command, args: list[str]) -> None:
    """One real command, as a user types it; stop at the first failure."""
    print(f"$ {COMMANDS[command]} {' '.join(args)}", flush=True)
    if command(args) != 0:
        sys.exit(f"failed: {command.__module__} {' '.join(args)}")


def keep(src: Path, name: str) -> None:
    """Copy a figure into docs/ as a small PNG (palette colours: contour plots have few)."""
    with Image.open(src) as image:
        image.convert("RGB").quantize(colors=128).save(DOCS / name, optimize=True)
    print(f"docs/{name}: {(DOCS / name).stat().st_size // 1024} KB")


def frames(gif: Path, name: str, picks: int = 3) -> None:
    """Frames of the trajectory animation (first, middle, last epoch) side by side, as one PNG."""
    with Image.open(gif) as anim:
        chosen = sorted({0, anim.n_frames // 2, anim.n_frames - 1})[:picks]
        shots = []
        for i in chosen:
            anim.seek(i)
            shots.append(anim.convert("RGB"))
    strip = Image.new("RGB", (sum(s.width for s in shots), max(s.height for s in shots)), "white")
    for i, shot in enumerate(shots):
        strip.paste(shot, (sum(s.width for s in shots[:i]), 0))
    strip.save(DOCS / ".strip.png")
    keep(DOCS / ".strip.png", name)
    (DOCS / ".strip.png").unlink()


def screenshot(page: Path, name: str) -> None:
    """The interactive page as headless chromium draws it (software WebGL)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print(f"docs/{name}: left as it was (no chromium)")
        return
    shot = page.with_suffix(".png")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
                    "--hide-scrollbars", "--window-size=900,760", "--virtual-time-budget=5000",
                    f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True, timeout=180)
    keep(shot, name)


def main(work: Path) -> None:
    ckpts = work / "train" / "checkpoints"
    run(train.main, ["model=digits_cnn", "data=digits", "train.epochs=8", f"run.dir={work / 'train'}"])
    common = ["model=digits_cnn", "data=digits", "launcher.workers=1", "grid.resolution=21", *SMALL]
    for name, ckpt in (("random", "last"), ("early", "epoch_001")):
        run(surface.main, common + [f"checkpoint={ckpts / f'{ckpt}.pt'}", f"run.dir={work / name}"])
    run(surface.main, common + [f"checkpoint={ckpts / 'last.pt'}", "directions=pca", f"directions.checkpoints={ckpts}",
                                "plot.html=true", f"run.dir={work / 'pca'}"])
    run(surface.main, [*common[:3], "grid.resolution=41", *SMALL, f"checkpoint={ckpts / 'last.pt'}", "directions=line",
                       f"directions.start={ckpts / 'epoch_000.pt'}", "data.split=both", f"run.dir={work / 'line'}"])
    run(plots.main, [str(work / "early"), str(work / "random"), f"plot.dir={work / 'compare'}", *SMALL])
    run(surface.main, common + [f"checkpoint={ckpts / 'last.pt'}", "directions.planes=4", f"run.dir={work / 'planes'}"])
    run(surface.main, common + [f"checkpoint={ckpts / 'epoch_008.pt'}", "directions=plane",
                                f"directions.points=[{ckpts / 'epoch_001.pt'},{ckpts / 'epoch_004.pt'}]",
                                f"run.dir={work / 'plane'}"])
    run(surface.main, [*common[:3], "grid.resolution=9", *SMALL, f"checkpoint={ckpts / 'last.pt'}",
                       "metrics=[loss,hessian]", "hessian.samples=256", f"run.dir={work / 'hessian'}"])
    keep(work / "random" / "plots" / "train_loss_contourf.png", "random-centre.png")
    keep(work / "line" / "plots" / "1d_loss_acc.png", "line-1d.png")
    keep(work / "compare" / "train_loss_contourf.png", "compare-contourf.png")
    keep(work / "compare" / "train_loss_difference.png", "compare-difference.png")
    frames(work / "pca" / "plots" / "trajectory.gif", "trajectory-frames.png")
    keep(work / "planes" / "plots" / "train_loss_std_contourf.png", "planes-std.png")
    keep(work / "plane" / "plots" / "train_loss_contourf.png", "plane-checkpoints.png")
    keep(work / "hessian" / "plots" / "convexity_heatmap.png", "convexity.png")
    screenshot(work / "pca" / "plots" / "surface.html", "interactive.png")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]).absolute())
    else:
        with tempfile.TemporaryDirectory(prefix="landscape-docs-") as tmp:
            main(Path(tmp))
