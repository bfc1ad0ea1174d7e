"""The report in a real browser: headless Chromium opens it offline and draws every figure."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_report import MODELS, fake_run, lab_extras, lab_runs, write_page

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
        reason="needs /usr/bin/chromium and /usr/bin/chromedriver (Debian chromium-driver)",
    ),
]

FIGURES_DRAWN = """
const divs = [...document.querySelectorAll('.plotly-graph-div')];
return divs.map(d => d.querySelectorAll('.main-svg').length);
"""
IMAGES = "return [...document.images].map(i => [i.alt, i.complete && i.naturalWidth > 0]);"


def chromium(profile: Path):
    """Headless Chromium driven by the system chromedriver (selenium-manager never runs)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def open_report(driver, page: Path, timeout: float = 20) -> dict:
    """Load `page`, wait until plotly has drawn every figure; what the browser saw."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.set_window_size(1400, 1000)
    driver.get(page.resolve().as_uri())
    expected = page.read_text(encoding="utf-8").count('class="plotly-graph-div"')

    def drawn(d) -> list[int] | None:
        counts = d.execute_script(FIGURES_DRAWN)
        return counts if len(counts) == expected and all(counts) else None

    figures = WebDriverWait(driver, timeout).until(drawn)
    return {
        "expected_figures": expected,
        "figures": figures,
        "images": driver.execute_script(IMAGES),
        "errors": [e for e in driver.get_log("browser") if e["level"] == "SEVERE"],
    }


def full_page_screenshot(driver, out: Path, width: int = 1400) -> Path:
    """The whole page as one PNG: the window made as tall as the document."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, height + 200)  # the window frame eats some of it
    driver.execute_script("window.dispatchEvent(new Event('resize'))")
    driver.execute_script("return new Promise(r => setTimeout(r, 500))")
    driver.save_screenshot(str(out))
    return out


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    pytest.importorskip("selenium", reason="the browser tests drive Chromium with selenium")
    browser = chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.quit()


def test_report_renders_offline_without_errors(driver, tmp_path):
    page = write_page(tmp_path / "report.html", lab_runs(n_epochs=4), lab_extras())
    seen = open_report(driver, page)
    assert seen["errors"] == []
    assert seen["expected_figures"] == 1 + 2 * len(MODELS)
    assert len(seen["figures"]) == seen["expected_figures"]
    assert all(n >= 1 for n in seen["figures"])
    assert len(seen["images"]) == 4
    assert all(decoded for _, decoded in seen["images"]), seen["images"]
    shot = full_page_screenshot(driver, tmp_path / "report.png")
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_live_report_renders_while_a_model_trains(driver, tmp_path):
    training = [fake_run("simple", n_epochs=2, status="running")]
    extras = lab_extras(images=("samples",), planned={"simple": 5, "advanced": 5})
    page = write_page(tmp_path / "report.html", training, extras, live=True)
    seen = open_report(driver, page)  # the advanced CNN is queued: a placeholder, no figures
    assert 'http-equiv="refresh"' in page.read_text()
    assert seen["errors"] == []
    assert seen["expected_figures"] == 3  # the accuracy chart, simple's loss and confusion
