"""``mmsr inspect`` in a real browser: headless Chromium (Debian's ``chromium``, which
``make`` installs as root) driven by Playwright, over a server on 127.0.0.1. Opens the list,
filters it, opens a trajectory and sees its image and hits, checks that hostile text stays
text, opens the side-by-side and training views, and sees lines appended on reload.

Each view's screenshot is saved in the test's temporary folder, and also in
``$MMSR_INSPECT_SCREENSHOTS`` when set. Skips, saying why, without the browser or Playwright.
Nothing is downloaded: Playwright drives the system browser (``executable_path``).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from inspect_runs import HOSTILE, write_served_runs
from service_fakes import free_port

from mmsr.inspect.cli import make_server
from mmsr.inspect.store import Store

CHROMIUM = os.environ.get("MMSR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"no Chromium at {CHROMIUM} (install Debian's chromium: make setup as root, or "
        "apt-get install chromium; MMSR_CHROMIUM names another binary)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install -e '.[dev]')"
)
expect = sync_api.expect


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_served_runs(tmp_path_factory.mktemp("browser") / "runs")


@pytest.fixture(scope="module")
def base_url(runs: Path) -> Iterator[str]:
    """The inspector over ``runs``, served as ``mmsr inspect`` serves it, in a thread."""
    port = free_port()
    server = make_server(Store([runs]), "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the inspector did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def page(base_url: str) -> Iterator[Any]:
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses root otherwise
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.problems = []
        page.on("pageerror", lambda e: page.problems.append(f"page error: {e}"))
        page.on("console", lambda m: page.problems.append(m.text) if m.type == "error" else None)
        page.on(
            "request",
            lambda r: None if r.url.startswith(base_url) else page.problems.append(r.url),
        )
        page.set_default_timeout(10_000)
        yield page
        browser.close()


def open_view(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-view]:not([data-view=loading])")
    assert page.locator("body").get_attribute("data-view") != "error", page.inner_text("main")


def screenshot(page: Any, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"))
    extra = os.environ.get("MMSR_INSPECT_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(extra) / f"inspect_{name}.png"))


def rows(page: Any) -> Any:
    return page.locator("#rows tbody tr")


def test_list_filter_trajectory_side_by_side_training(
    page: Any, base_url: str, runs: Path, tmp_path: Path
) -> None:
    shots = tmp_path / "screenshots"
    open_view(page, base_url)
    assert page.locator("input[data-run]").count() == 4

    # the list: every line, the bad one shown as such; then filtered
    page.click("text=runs/warm")
    page.wait_for_selector("#rows")
    assert rows(page).count() == 7
    assert "not JSON" in page.locator("tr.badline").inner_text()
    assert page.locator(".metrics .card").count() >= 2  # the run's metrics on top
    screenshot(page, shots, "list")
    page.select_option("select[name=correct]", "false")
    expect(rows(page)).to_have_count(3)
    page.fill("input[name=text]", "lion")
    page.press("input[name=text]", "Enter")
    expect(rows(page)).to_have_count(1)

    # a trajectory: its image, its hits with their thumbnails, the action marked
    open_view(page, base_url + "#/run?run=0/rl&tools=both")
    page.click("#rows tbody tr >> text=q-lion")
    page.wait_for_selector(".trajectory")
    images = page.locator("img.question, .hit img.thumb")
    assert images.count() == 3  # the question's and two thumbnails
    expect(images.first).to_be_visible()
    loaded = "imgs => imgs.every(i => i.complete && i.naturalWidth > 0)"
    deadline = time.monotonic() + 10
    while not images.evaluate_all(loaded):
        assert time.monotonic() < deadline, "an image did not load"
        time.sleep(0.1)
    assert page.locator(".hit").count() == 4 and "A lion is an animal." in page.inner_text(
        ".call >> nth=1"
    )
    assert page.locator("mark.action").count() == 3
    screenshot(page, shots, "trajectory")

    # hostile text stays text: nothing ran, no javascript: link was made
    open_view(page, base_url + "#/side?run=0/warm&run=0/rl&id=q-cat")
    assert HOSTILE in page.inner_text("main")
    assert page.locator(".hit >> text=<script>window.__xss=2</script>Evil page").count() == 1
    assert page.evaluate("window.__xss") is None
    assert page.locator("a[href^='javascript']").count() == 0
    assert page.locator(".side > div").count() == 2

    # side by side: the disagreements, then one question in both runs
    open_view(page, base_url + "#/compare?run=0/warm&run=0/rl")
    assert page.locator("#disagree tbody tr").count() == 3
    page.click("#disagree tbody tr >> text=q-lion")
    page.wait_for_selector(".side")
    assert page.locator(".side img.question").count() == 2
    screenshot(page, shots, "side_by_side")

    # a training folder: its steps, then a step's samples grouped by prompt
    open_view(page, base_url + "#/training?key=0/grpo")
    assert page.locator("#steps tbody tr").count() == 2
    page.click("#steps tbody tr >> nth=1")
    page.wait_for_selector(".group")
    assert page.locator(".group").count() == 2 and "-0.700" in page.inner_text(".group >> nth=0")
    screenshot(page, shots, "training")

    # a line appended while the page is open shows on reload
    open_view(page, base_url + "#/run?run=0/warm")
    assert rows(page).count() == 7
    path = runs / "warm" / "trajectories.jsonl"
    with path.open("a") as f:
        f.write(path.read_text().splitlines()[0] + "\n")
    page.reload()
    expect(rows(page)).to_have_count(8)

    assert page.problems == []
    assert sorted(p.name for p in shots.iterdir()) == [
        "list.png",
        "side_by_side.png",
        "training.png",
        "trajectory.png",
    ]
