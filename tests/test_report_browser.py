"""report.html in a real browser: headless Chromium (Debian's, driven by Playwright) renders it offline and cleanly.

The string-level tests in test_report_build.py cannot tell whether a data URI actually decodes or whether the page
asks the network for something; a browser can. Playwright's bundled browsers cannot be downloaded here, so the test
uses the system Chromium and skips, saying why, where either is missing.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image

# .ci/run sets this once it has a Chromium: from then on a missing browser or Playwright fails instead of skipping.
REQUIRED = os.environ.get("VLREPRO_REQUIRE_BROWSER") == "1"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
if REQUIRED:
    assert CHROMIUM, "VLREPRO_REQUIRE_BROWSER=1 but no chromium executable"
    import playwright.sync_api as sync_api
else:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[dev]')")
    pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium executable (apt-get install chromium)")

from vlrepro.io import write_metrics  # noqa: E402
from vlrepro.report import PAPERS, build_report  # noqa: E402

# The machine is offline: without these Chromium spends its time (and our timeouts) trying to reach Google hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where the sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The only URLs a self-contained report may load: itself and its embedded figures.
LOCAL_SCHEMES = ("file", "data")


@dataclass
class Loaded:
    """A page opened in the browser, with what it said and asked for while loading."""

    page: sync_api.Page
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def external_requests(self) -> list[str]:
        return [url for url in self.requests if urlsplit(url).scheme not in LOCAL_SCHEMES]

    def images(self) -> list[dict[str, Any]]:
        return self.page.evaluate(
            """() => Array.from(document.images, img => ({
                src: img.src.slice(0, 60), complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
            }))"""
        )


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser: sync_api.Browser, path: Path) -> Loaded:
    # Listeners go on the context before navigation, so nothing during the load is missed.
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    loaded = Loaded(page)
    page.on("console", lambda msg: msg.type == "error" and loaded.console_errors.append(msg.text))
    page.on("pageerror", lambda exc: loaded.page_errors.append(str(exc)))
    context.on("request", lambda request: loaded.requests.append(request.url))
    page.goto(path.resolve().as_uri(), wait_until="load")  # "load" waits for every <img>
    return loaded


# The checks, shared by the real report and the hand-made pages that show they can fail.


def assert_loads_cleanly(loaded: Loaded) -> None:
    assert not loaded.console_errors, f"console errors: {loaded.console_errors}"
    assert not loaded.page_errors, f"page errors: {loaded.page_errors}"
    assert not loaded.external_requests(), f"requests that left the file: {loaded.external_requests()}"


def assert_images_decode(loaded: Loaded) -> None:
    images = loaded.images()
    assert images, "no <img> in the page"
    broken = [img for img in images if not (img["complete"] and img["width"] > 0 and img["height"] > 0)]
    assert not broken, f"images that did not decode: {broken}"


def assert_summary_table(loaded: Loaded) -> None:
    # The contract: pandas' to_html(table_id="summary-table"), near the top of the report.
    assert loaded.page.locator("table#summary-table").count() == 1, "no <table id='summary-table'> in the page"
    assert loaded.page.locator("table#summary-table tbody tr").count() >= 1, "the summary table has no body rows"


def assert_toc_resolves(loaded: Loaded) -> None:
    ids = loaded.page.eval_on_selector_all("[id]", "elements => elements.map(e => e.id)")
    assert len(ids) == len(set(ids)), f"ids used twice: {sorted({i for i in ids if ids.count(i) > 1})}"
    targets = loaded.page.eval_on_selector_all(
        "nav#toc a", "links => links.map(a => document.getElementById(a.getAttribute('href').slice(1))?.tagName)"
    )
    assert targets and all(tag == "H2" for tag in targets), f"table of contents targets: {targets}"


def take_screenshots(loaded: Loaded, out: Path) -> list[Path]:
    """The top of the page (the viewport), the whole page, and the first paper's section (its h2 up to the next
    h2; the viewport if none)."""
    out.mkdir(parents=True, exist_ok=True)
    top, full, section = out / "top.png", out / "full_page.png", out / "first_paper_section.png"
    loaded.page.screenshot(path=top)
    loaded.page.screenshot(path=full, full_page=True)
    papers = "|".join(map(re.escape, PAPERS))
    box = loaded.page.evaluate(
        """papers => {
            const pattern = new RegExp(`\\\\b(${papers})\\\\b`);
            const h2s = Array.from(document.querySelectorAll("h2"));
            const i = h2s.findIndex(h => pattern.test(h.textContent));
            if (i < 0) return null;
            const top = h2s[i].getBoundingClientRect().top + window.scrollY;
            const bottom = i + 1 < h2s.length
                ? h2s[i + 1].getBoundingClientRect().top + window.scrollY
                : document.documentElement.scrollHeight;
            return {x: 0, y: top, width: document.documentElement.scrollWidth, height: bottom - top};
        }""",
        papers,
    )
    if box is None:
        loaded.page.screenshot(path=section)
    else:
        loaded.page.screenshot(path=section, full_page=True, clip=box)
    return [top, full, section]


# Two reports: one built here from a small fixture (a data stage and a paper stage, 2 variants × 2 seeds), and
# the repository's committed default-profile report (reports/report.html), what a reader opens.
COMMITTED = Path(__file__).resolve().parents[1] / "reports" / "report.html"


def fixture_report(out: Path, metrics: Path) -> Path:
    write_metrics(metrics / "data.json", "data", {"n_images": 12, "baselines": {"refcoco": {"val": {"random": 0.2}}}})
    for variant, pointing in {"amc": (0.80, 0.84), "no_amc": (0.70, 0.72)}.items():
        for seed, value in enumerate(pointing):
            values = {"refcoco+": {"testA": {"pointing": value}}, "cub.deletion": 0.01 + seed / 100}
            write_metrics(metrics / "amc" / f"{variant}-{seed}.json", "amc", values, variant, seed)
    build_report(metrics, out, "Browser test report", 0.05)
    return out / "report.html"


@pytest.fixture(scope="module", params=["fixture", "committed"])
def report_html(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if request.param == "committed":
        return COMMITTED
    return fixture_report(tmp_path_factory.mktemp("report"), tmp_path_factory.mktemp("metrics"))


@pytest.fixture(scope="module")
def report(browser: sync_api.Browser, report_html: Path) -> Loaded:
    return open_page(browser, report_html)


def test_report_loads_offline_without_errors(report: Loaded) -> None:
    assert report.requests, "the browser recorded no request at all (not even the file itself)"
    assert_loads_cleanly(report)


def test_report_images_decode(report: Loaded) -> None:
    assert_images_decode(report)


def test_report_has_summary_table(report: Loaded) -> None:
    assert_summary_table(report)


def test_table_of_contents_links_every_section(report: Loaded) -> None:
    assert_toc_resolves(report)
    targets = report.page.eval_on_selector_all("nav#toc a", "links => links.map(a => a.getAttribute('href'))")
    sections = report.page.eval_on_selector_all("h2", "hs => hs.map(h => '#' + h.id)")
    assert targets == sections and "#summary" in targets and len(targets) > len(PAPERS)


def test_report_screenshots(report: Loaded, report_html: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Screenshots under pytest's temp folder: <basetemp>/screenshots-<fixture|committed>0/*.png."""
    name = "committed" if report_html == COMMITTED else "fixture"
    for png in take_screenshots(report, tmp_path_factory.mktemp(f"screenshots-{name}")):
        assert png.stat().st_size > 0, png


# Hand-made pages: the checks pass on a page that honours the contract and catch each fault they look for.


def png_data_uri(width: int = 4, height: int = 3) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), "steelblue").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def test_checks_pass_on_a_conforming_page(browser: sync_api.Browser, tmp_path: Path) -> None:
    page = tmp_path / "good.html"
    page.write_text(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>good</title></head><body>'
        '<nav id="toc"><a href="#amc">AMC</a></nav>'
        '<table id="summary-table"><thead><tr><th>paper</th></tr></thead><tbody><tr><td>AMC</td></tr></tbody></table>'
        f'<h2 id="amc">AMC</h2><p>text</p><figure><img alt="x" src="{png_data_uri()}"></figure>'
        "<h2>References</h2></body></html>"
    )
    loaded = open_page(browser, page)
    assert_loads_cleanly(loaded)
    assert_images_decode(loaded)
    assert_summary_table(loaded)
    assert_toc_resolves(loaded)
    for png in take_screenshots(loaded, tmp_path / "screenshots"):
        assert png.stat().st_size > 0, png


def test_checks_catch_faults(browser: sync_api.Browser, tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    # Port 9 is on Chromium's unsafe-port list: the request is made (and recorded) but refused without any I/O.
    page.write_text(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>bad</title></head><body>'
        '<img alt="remote" src="http://127.0.0.1:9/figure.png">'
        '<img alt="corrupt" src="data:image/png;base64,AAAA">'
        '<nav id="toc"><a href="#nowhere">x</a></nav><h2 id="twice">a</h2><h2 id="twice">b</h2>'
        "<script>undefined_function()</script></body></html>"
    )
    loaded = open_page(browser, page)
    assert loaded.external_requests() == ["http://127.0.0.1:9/figure.png"]
    assert any("undefined_function" in e for e in loaded.page_errors), loaded.page_errors
    assert loaded.console_errors, "a failed image load should log a console error"
    for check in (assert_loads_cleanly, assert_images_decode, assert_summary_table, assert_toc_resolves):
        with pytest.raises(AssertionError):
            check(loaded)
