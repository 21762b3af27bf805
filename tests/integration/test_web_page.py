"""The web page in a real browser (Debian's headless chromium through chromium-driver): it
loads on a phone-sized screen, a search shows results, and clicking a result searches again."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from cbir import wiring
from cbir.domain.images import image_id_of
from cbir.stack.launcher import Launcher
from producers.ingest import IngestItem
from tests.integration.helpers import indexed, wait_for
from tests.integration.test_phone_photos import phone_photos

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
)
PHONE = (390, 844)
DESKTOP = (1280, 900)


def chromium(phone: bool) -> WebDriver:
    chromium_path, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium_path or not driver:
        pytest.fail(
            "chromium and chromium-driver are needed: `apt-get install chromium "
            "chromium-driver` (scripts/test.sh installs them)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    if phone:  # a phone's viewport (a headless window has a minimum width wider than a phone)
        options.add_experimental_option(
            "mobileEmulation",
            {"deviceMetrics": {"width": PHONE[0], "height": PHONE[1], "pixelRatio": 2}},
        )
    else:
        options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    session = chromium(phone=True)
    try:
        yield session
    finally:
        session.quit()


@pytest.fixture(scope="module")
def desktop() -> Iterator[WebDriver]:
    session = chromium(phone=False)
    try:
        yield session
    finally:
        session.quit()


CUT_OFF = """
return Array.from(document.querySelectorAll('#results .result')).flatMap(function (card) {
  var box = card.getBoundingClientRect();
  return Array.from(card.querySelectorAll('button')).filter(function (button) {
    var r = button.getBoundingClientRect();
    return r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.bottom > box.bottom + 0.5
      || button.scrollWidth > button.clientWidth + 1;
  }).map(function (button) { return card.dataset.imageId + ': ' + button.textContent; });
});
"""


def actions_cut_off(browser: WebDriver) -> list[str]:
    """The result cards' buttons not wholly inside their card, or their text clipped."""
    cut: list[str] = browser.execute_script(CUT_OFF)
    return cut


def screenshot(browser: WebDriver, folder: Path, name: str) -> None:
    browser.save_screenshot(str(folder / name))
    extra = os.environ.get("CBIR_TEST_SCREENSHOTS")  # to look at the page: a folder
    if extra:
        browser.save_screenshot(str(Path(extra) / name))


def result_ids(browser: WebDriver) -> list[str]:
    return [
        str(card.get_attribute("data-image-id"))
        for card in browser.find_elements(By.CSS_SELECTOR, "#results .result")
    ]


def test_search_then_click_a_result_to_search_with_it(
    browser: WebDriver, launcher: Launcher, indexed_flowers: list[Path], tmp_path: Path
) -> None:
    api = launcher.settings.api
    browser.get(f"http://{api.host}:{api.port}/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: len(result_ids(b)) > 0)  # the newest images, to browse
    viewport, width = browser.execute_script(
        "return [window.innerWidth, document.documentElement.scrollWidth]"
    )
    assert viewport == PHONE[0]
    assert width <= viewport, "the page scrolls sideways on a phone-sized screen"

    photo = indexed_flowers[10]
    browser.find_element(By.ID, "query-file").send_keys(str(photo.resolve()))
    wait.until(lambda b: "results in" in b.find_element(By.ID, "status").text)
    status = browser.find_element(By.ID, "status").text
    assert f"looks like: {photo.parent.name}" in status, status  # the predicted species
    found = result_ids(browser)
    assert found[0] == image_id_of(photo.read_bytes())
    # the grid loads thumbnails, never the originals
    sources = [
        str(img.get_attribute("src"))
        for img in browser.find_elements(By.CSS_SELECTOR, "#results .result img")
    ]
    assert sources and all(src.endswith("/thumbnail") for src in sources), sources
    scores = browser.find_elements(By.CSS_SELECTOR, "#results .result .score")
    assert float(scores[0].text) == pytest.approx(1.0, abs=1e-3)

    clicked = found[3]
    browser.find_element(
        By.CSS_SELECTOR, f'#results .result[data-image-id="{clicked}"] img'
    ).click()
    wait.until(lambda b: "results like" in b.find_element(By.ID, "status").text)
    assert result_ids(browser)[0] == clicked

    # the same object: spatial re-ranking, its inliers on each verified card
    browser.find_element(By.ID, "same-object").click()
    browser.find_element(By.ID, "query-file").send_keys(str(photo.resolve()))
    wait.until(lambda b: "same object:" in b.find_element(By.ID, "status").text)
    first = browser.find_element(By.CSS_SELECTOR, "#results .result .score").text
    assert "inliers" in first and result_ids(browser)[0] == image_id_of(photo.read_bytes())
    # and a card's near-duplicates view answers
    browser.find_element(By.CSS_SELECTOR, "#results .result .actions button").click()
    wait.until(lambda b: "near-duplicate" in b.find_element(By.ID, "status").text)
    assert "error" not in (browser.find_element(By.ID, "status").get_attribute("class") or "")
    assert not actions_cut_off(browser)
    screenshot(browser, tmp_path, "web_page_phone.png")


def test_no_card_action_is_cut_off_on_a_desktop_screen(
    desktop: WebDriver, launcher: Launcher, indexed_flowers: list[Path], tmp_path: Path
) -> None:
    """At 1280 px the grid's columns are at their narrowest (150 px): the longest label (a
    score with its inliers) and both buttons must fit, the buttons wrapping below it."""
    api = launcher.settings.api
    desktop.get(f"http://{api.host}:{api.port}/")
    wait = WebDriverWait(desktop, 30)
    wait.until(lambda b: len(result_ids(b)) > 0)
    assert desktop.execute_script("return window.innerWidth") >= DESKTOP[0] - 20
    assert not actions_cut_off(desktop)
    desktop.find_element(By.ID, "same-object").click()
    desktop.find_element(By.ID, "query-file").send_keys(str(indexed_flowers[10].resolve()))
    wait.until(lambda b: "same object:" in b.find_element(By.ID, "status").text)
    assert "inliers" in desktop.find_element(By.CSS_SELECTOR, "#results .result .score").text
    assert not actions_cut_off(desktop)
    screenshot(desktop, tmp_path, "web_page_desktop.png")


def test_cards_say_when_and_with_what_a_photo_was_taken_and_browsing_keeps_a_window(
    browser: WebDriver,
    launcher: Launcher,
    indexed_flowers: list[Path],
    shared_dir: Path,
    tmp_path: Path,
) -> None:
    settings = launcher.settings
    heic = phone_photos(shared_dir / "data" / "holidays")[0]  # taken 2024-07-10 09:30:05
    path = tmp_path / heic.file_name
    path.write_bytes(heic.data)
    wiring.ingest(settings, [IngestItem(path, ())])
    wait_for(lambda: indexed(settings, {heic.image_id}) == 1, 120, "the HEIC indexed")

    api = settings.api
    browser.get(f"http://{api.host}:{api.port}/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: len(result_ids(b)) > 0)
    browser.find_element(By.ID, "query-file").send_keys(str(indexed_flowers[0].resolve()))
    wait.until(lambda b: "results in" in b.find_element(By.ID, "status").text)
    first = browser.find_element(By.CSS_SELECTOR, "#results .result .taken").text
    assert first == "no capture date"  # a flower without EXIF: nothing made up

    browser.execute_script(
        "document.getElementById('taken-after').value = '2024-07-10';"
        "document.getElementById('taken-before').value = '2024-07-10';"  # to the end of it
    )
    browser.find_element(By.ID, "browse").click()
    wait.until(lambda b: "photos taken then" in b.find_element(By.ID, "status").text)
    assert result_ids(browser) == [heic.image_id]
    taken = browser.find_element(By.CSS_SELECTOR, "#results .result .taken").text
    assert taken == "taken 2024-07-10 09:30 · Apple iPhone 15 Pro"
    assert not actions_cut_off(browser)


def test_words_in_the_text_box_are_searched_and_a_refusal_says_why(
    desktop: WebDriver, launcher: Launcher, indexed_flowers: list[Path]
) -> None:
    """The session's collection is the MobileNet's, which has no text tower: the box sends the
    words to /search/text and shows the API's reason (a CLIP collection answers with results:
    tests/integration/test_text_search.py)."""
    api = launcher.settings.api
    desktop.get(f"http://{api.host}:{api.port}/")
    wait = WebDriverWait(desktop, 30)
    wait.until(lambda b: len(result_ids(b)) > 0)
    desktop.find_element(By.ID, "text-query").send_keys("red car at night")
    desktop.find_element(By.CSS_SELECTOR, "#text-search button").click()
    wait.until(lambda b: "text tower" in b.find_element(By.ID, "status").text)
    status = desktop.find_element(By.ID, "status")
    assert "--clip" in status.text and "error" in (status.get_attribute("class") or "")


def test_the_page_installs_as_an_app_whose_worker_keeps_only_the_shell(
    browser: WebDriver, launcher: Launcher, indexed_flowers: list[Path]
) -> None:
    """What Chromium asks of an installable app: a manifest with a name, a start URL, a
    standalone display and 192 and 512 px icons, and a registered service worker; the worker
    caches the shell and never a search's answer."""
    api = launcher.settings.api
    base = f"http://{api.host}:{api.port}"
    browser.get(f"{base}/")
    WebDriverWait(browser, 30).until(lambda b: len(result_ids(b)) > 0)
    browser.set_script_timeout(30)
    scope = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "navigator.serviceWorker.ready.then((r) => done(r.active ? r.scope : null));"
    )
    assert scope == f"{base}/", scope
    manifest = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const link = document.querySelector('link[rel=manifest]');"
        "fetch(link.href).then((r) => r.json()).then(done, (e) => done(String(e)));"
    )
    assert manifest["start_url"] == "/" and manifest["display"] == "standalone", manifest
    assert {"192x192", "512x512"} <= {icon["sizes"] for icon in manifest["icons"]}
    for icon in manifest["icons"]:
        fetched = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(arguments[0]).then((r) => done([r.status, r.headers.get('content-type')]));",
            icon["src"],
        )
        assert fetched == [200, "image/png"], (icon, fetched)
    # a search through the page, then what the worker's cache holds: the shell alone
    browser.find_element(By.ID, "query-file").send_keys(str(indexed_flowers[3].resolve()))
    WebDriverWait(browser, 30).until(lambda b: "results in" in b.find_element(By.ID, "status").text)
    cached = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "caches.keys().then((names) => Promise.all(names.map((n) => caches.open(n)"
        ".then((c) => c.keys())))).then((lists) => done(lists.flat().map((q) => q.url)));"
    )
    paths = {url.removeprefix(base) for url in cached}
    assert "/" in paths and "/manifest.webmanifest" in paths, paths
    assert not [p for p in paths if p.startswith(("/search", "/images", "/share"))], paths


def test_a_photo_shared_from_the_gallery_opens_the_page_with_its_results(
    browser: WebDriver, launcher: Launcher, indexed_flowers: list[Path]
) -> None:
    """The manifest's share target, as the phone's share sheet uses it: a multipart POST of
    the photo to /share, answered with the page showing that photo's results."""
    api = launcher.settings.api
    photo = indexed_flowers[12]
    answered = httpx.post(
        f"http://{api.host}:{api.port}/share",
        files={"image": (photo.name, photo.read_bytes(), "image/jpeg")},
        data={"title": "", "text": ""},
        timeout=60,
    )
    assert answered.status_code == 200 and "text/html" in answered.headers["content-type"]
    shared = json.loads(
        answered.text.split('id="shared" type="application/json">')[1].split("</")[0]
    )
    assert shared["results"][0]["image_id"] == image_id_of(photo.read_bytes())

    # the same through the browser: a form posted as the share sheet posts it
    browser.get(f"http://{api.host}:{api.port}/")
    browser.execute_script(
        "const form = document.createElement('form');"
        "form.id = 'share-sheet'; form.method = 'post'; form.action = '/share';"
        "form.enctype = 'multipart/form-data';"
        "const input = document.createElement('input');"
        "input.type = 'file'; input.name = 'image'; input.id = 'shared-file';"
        "form.appendChild(input); document.body.appendChild(form);"
    )
    browser.find_element(By.ID, "shared-file").send_keys(str(photo.resolve()))
    browser.execute_script("document.getElementById('share-sheet').submit();")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: "results for the shared photo" in b.find_element(By.ID, "status").text)
    assert result_ids(browser)[0] == image_id_of(photo.read_bytes())
    assert browser.execute_script("return location.pathname") == "/"
    # nothing shared: the page says what to do
    empty = httpx.post(f"http://{api.host}:{api.port}/share", data={"text": " "}, timeout=60)
    assert empty.status_code == 200 and "nothing was shared" in empty.text


def test_the_api_docs_list_the_operations_offline(browser: WebDriver, launcher: Launcher) -> None:
    """This machine reaches no CDN: the page renders only if its assets come from the API."""
    api = launcher.settings.api
    browser.get(f"http://{api.host}:{api.port}/docs")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".opblock")) >= 5)
    summaries = {
        element.text for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    }
    assert {"/search", "/images/{image_id}/similar"} <= summaries, summaries
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; })"
    )
    assert loaded and all(f"{api.host}:{api.port}/" in url for url in loaded), loaded
