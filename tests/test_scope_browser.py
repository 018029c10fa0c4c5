"""The shipped app in a real browser (chromium, through Playwright): a photo unlike CIFAKE shows the out-of-scope
answer, a CIFAKE test image does not."""

from __future__ import annotations

import importlib
import os
import shutil

import pytest
from PIL import Image

from cifake_models.page.state import example_files, load_state
from cifake_models.paths import CHECKPOINT_DIR
from cifake_models.scope import SCOPE_FILE

CHROMIUM = "/usr/bin/chromium"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
    pytest.skip(f"no chromium at {CHROMIUM}: browser tests skipped", allow_module_level=True)
if not (CHECKPOINT_DIR / SCOPE_FILE).is_file() or not example_files():
    pytest.skip("no shipped scope score or examples", allow_module_level=True)
sync_playwright = pytest.importorskip("playwright.sync_api", reason="no playwright package").sync_playwright
pytestmark = pytest.mark.filterwarnings("ignore:.*(no_silent_downcasting|copy keyword).*")


@pytest.fixture(scope="module")
def url():
    from tests.test_app_browser import free_port

    demo = importlib.import_module("app").build_demo(load_state(CHECKPOINT_DIR))
    _, local_url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True
    )
    yield local_url
    demo.close()


def test_a_photo_crop_is_out_of_scope_and_a_cifake_image_is_not(url, tmp_path):
    from skimage.data import rocket

    photo = tmp_path / "rocket.png"  # a kept-aside source photograph (train.scope_sets.PHOTOS)
    Image.fromarray(rocket()).resize((96, 64)).save(photo)
    example = example_files()[0]
    with sync_playwright() as playwright:
        executable = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(url)
        assert "out of scope" in page.locator("#judging").inner_text()
        page.locator("#upload input[type=file]").set_input_files([str(photo), example])
        crop = page.locator("#results .card", has_text="rocket.png")
        crop.wait_for()
        assert "out of scope: unlike the photos and generator these detectors learned" in crop.inner_text()
        assert crop.locator(".verdict").first.inner_text() == "OUT_OF_SCOPE"
        cifake = page.locator("#results .card", has_text=os.path.basename(example))
        assert "in scope" in cifake.inner_text() and "out of scope" not in cifake.inner_text()
        browser.close()
