"""The web page in headless Chromium (Debian's, driven by Selenium): chat streams in, an arena
vote lands on disk, the leaderboard shows it.

Needs `apt-get install chromium chromium-driver` (.ci/run installs them); elsewhere the test
skips when they are missing, under CI=true it fails. LMFORGE_SCREENSHOTS=DIR saves a
screenshot of each tab there (docs/serve/ holds the ones in the docs).
"""

import os
import shutil
from pathlib import Path

import pytest

from lmforge.infer.arena import Arena
from lmforge.infer.server import ServeLimits
from tests.infer.serving import KEY, SlowScheduler, live_server, served, wait_until

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER) and os.environ.get("CI") != "true":
    pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


def test_chat_streams_and_an_arena_vote_reaches_disk(browser, chat_model_dir, tmp_path):
    from selenium.webdriver.common.by import By

    shots = os.environ.get("LMFORGE_SCREENSHOTS")
    limits = ServeLimits(max_prompt_tokens=150, max_tokens=40)
    model = served(chat_model_dir, SlowScheduler, limits)  # 50 ms a token: the stream is visible
    with live_server({"tiny": model}, limits, Arena(tmp_path)) as url:
        browser.get(url)
        find = lambda css: browser.find_element(By.CSS_SELECTOR, css)  # noqa: E731
        find("#key").send_keys(KEY)
        browser.execute_script("document.getElementById('key').dispatchEvent(new Event('change'))")
        wait_until(lambda: find("#model").get_attribute("value") == "tiny")
        find("#max_tokens").clear()
        find("#max_tokens").send_keys("30")
        find("#system").send_keys("Be brief.")
        find("#input").send_keys("What is 2 + 3?")
        find("#send").click()
        seen = set()
        wait_until(lambda: seen.add(find(".msg.assistant").text) or "tokens" in find("#status").text, 30)
        final = find(".msg.assistant").text
        assert final and any(0 < len(text) < len(final) for text in seen)  # it grew while we watched
        if shots:
            browser.save_screenshot(str(Path(shots) / "chat.png"))

        find('header button[data-tab="arena"]').click()
        find("#arena-input").send_keys("Name a colour.")
        find("#battle").click()
        wait_until(lambda: find(".vote").is_enabled(), 30)
        assert find("#answer-a").text != "…"
        if shots:
            browser.save_screenshot(str(Path(shots) / "arena.png"))
        find('.vote[data-winner="a"]').click()
        wait_until(lambda: "Vote stored" in find("#arena-status").text)
        assert len((tmp_path / "pairs.jsonl").read_text().splitlines()) == 1

        find('header button[data-tab="leaderboard"]').click()
        wait_until(lambda: "tiny" in find("#board").text)
        if shots:
            browser.save_screenshot(str(Path(shots) / "leaderboard.png"))
