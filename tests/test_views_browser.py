"""The interactive page in a real headless browser (Debian's chromium, driven over the DevTools protocol on a
pipe): it renders the 3D surface and logs no error; a page that throws is caught, so the check can fail."""
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from landscape.grid import Grid
from landscape.plot import PlotOptions, plot_surface_file
from landscape.surface import write_surface

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: `make test` installs Debian's where "
                                                         "it runs as root with apt; else apt-get install chromium")
# What the page holds once plotly drew it: WebGL canvases of the 3D scene, the surface traces, the menu.
RENDERED = """(() => { const g = document.getElementById('landscape-surface');
  return {canvases: g.querySelectorAll('.gl-container canvas').length, traces: (g._fullData || []).length,
          surface: (g._fullData || []).some(t => t.type === 'surface' && t.visible === true),
          menu: g.querySelectorAll('.updatemenu-header').length}; })()"""


def browse(page: Path, expression: str, timeout: float = 120) -> tuple[object, list[dict]]:
    """Open `page` in headless chromium, evaluate `expression` once it has loaded: (its value, the page's errors:
    uncaught exceptions, console.error calls and error log entries)."""
    to_browser, from_browser = os.pipe(), os.pipe()
    profile = page.parent / "chromium-profile"
    proc = subprocess.Popen(  # the DevTools pipe is fds 3 (commands in) and 4 (replies out)
        ["bash", "-c", f'exec "$0" "$@" 3<&{to_browser[0]} 4>&{from_browser[1]}', CHROMIUM, "--headless",
         "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--remote-debugging-pipe",
         f"--user-data-dir={profile}", "about:blank"],
        pass_fds=(to_browser[0], from_browser[1]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(to_browser[0])
    os.close(from_browser[1])
    deadline, pending, events, counter = time.monotonic() + timeout, b"", [], iter(range(1, 1000))

    def until(wanted) -> dict:
        nonlocal pending
        while time.monotonic() < deadline:
            while b"\0" in pending:
                raw, pending = pending.split(b"\0", 1)
                events.append(json.loads(raw))
                if wanted(events[-1]):
                    return events[-1]
            if select.select([from_browser[0]], [], [], 0.5)[0]:
                chunk = os.read(from_browser[0], 1 << 20)
                assert chunk, "chromium closed the DevTools pipe"
                pending += chunk
        raise TimeoutError(f"chromium did not answer within {timeout} s")

    def call(method: str, params: dict | None = None, session: str | None = None) -> dict:
        n = next(counter)
        message = {"id": n, "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        os.write(to_browser[1], json.dumps(message).encode() + b"\0")
        return until(lambda m: m.get("id") == n)

    try:
        target = call("Target.createTarget", {"url": "about:blank"})["result"]["targetId"]
        session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["result"]["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            call(f"{domain}.enable", session=session)
        call("Page.navigate", {"url": page.resolve().as_uri()}, session)
        until(lambda m: m.get("method") == "Page.loadEventFired")
        value = call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        call("Browser.close")
    finally:
        os.close(to_browser[1])
        os.close(from_browser[0])
        proc.wait(timeout=30)
    errors = [m["params"] for m in events if m.get("method") == "Runtime.exceptionThrown"
              or (m.get("method") == "Runtime.consoleAPICalled" and m["params"]["type"] in ("error", "assert"))
              or (m.get("method") == "Log.entryAdded" and m["params"]["entry"]["level"] == "error")]
    return value["result"]["result"].get("value"), errors


def test_a_page_that_throws_is_caught(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>console.error('drawn badly');"
                    "throw new Error('broken view')</script></body></html>")
    value, errors = browse(page, "1 + 1")
    assert value == 2 and len(errors) == 2
    assert "broken view" in json.dumps(errors) and "drawn badly" in json.dumps(errors)


def test_the_interactive_view_renders_without_errors(tmp_path):
    x, y = np.linspace(-1, 1, 21), np.linspace(-1, 1, 17)
    gx, gy = np.meshgrid(x, y)
    loss = 0.3 + gx**2 + 2 * gy**2
    trajectory = np.c_[np.linspace(-0.8, 0, 6), np.linspace(0.7, 0, 6)]
    write_surface(tmp_path / "s.h5", Grid(x, y), {"train_loss": loss, "train_acc": 95 - 5 * loss,
                                                  "done": np.ones(loss.shape, bool)}, "d.h5",
                  {"title": "cnn on digits, pca directions", "checkpoint": "last", "directions": "pca"},
                  {"trajectory": trajectory, "trajectory_labels": np.arange(6)})
    opts = PlotOptions(html=True, animation=False, metrics=("train_loss", "train_acc"), dpi=30, levels=5)
    (page,) = [p for p in plot_surface_file(tmp_path / "s.h5", tmp_path / "plots", opts) if p.suffix == ".html"]
    value, errors = browse(page, RENDERED)
    assert errors == []
    assert (value["traces"], value["surface"], value["menu"]) == (4, True, 1)  # 2 maps, each with its path
    assert value["canvases"] >= 1  # the WebGL scene is there
