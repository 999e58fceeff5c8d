"""Driving a served page in headless Chromium (Debian's chromium + chromedriver, selenium)."""
import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image


def chromium_or_skip():
    """A headless Chromium session, or a skip (a failure when VISIONLLM_REQUIRE_BROWSER=1)."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    problem = None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        problem = "selenium is not installed"
    if problem is None and not (chromium and chromedriver):
        problem = "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    if problem is not None:
        if os.environ.get("VISIONLLM_REQUIRE_BROWSER") == "1":
            pytest.fail(f"VISIONLLM_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1100"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)


def page_json(driver) -> dict:
    """The answer shown by the page's JSON view (one token per line there)."""
    from selenium.webdriver.common.by import By

    text = driver.find_element(By.ID, "result-json").text
    return json.loads("".join(text[text.index("{"):].splitlines()))


def fetch_picture(src: str) -> np.ndarray:
    import httpx

    response = httpx.get(src, timeout=60)
    assert response.status_code == 200
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


class PageWait:
    """``WebDriverWait.until`` that stops at once, failing with its text, when the page shows an
    error toast (a handler's ``gr.Error``) instead of waiting for a view that will not change."""

    def __init__(self, wait):
        self.wait = wait

    def until(self, condition):
        from selenium.webdriver.common.by import By

        def met_or_error(driver):
            errors = driver.find_elements(By.CSS_SELECTOR, "[data-testid='toast-body']")
            return ("error", " ".join(errors[0].get_attribute("textContent").split())) if errors else condition(driver)

        outcome = self.wait.until(met_or_error)
        if isinstance(outcome, tuple) and outcome[:1] == ("error",):
            pytest.fail(f"the page showed an error: {outcome[1]}")
        return outcome


def click_image_pixel(driver, selector: str, x: int, y: int) -> tuple:
    """Click the displayed image near pixel (x, y) of its file (the image is shown scaled to fit,
    centred); returns the pixel under the click, as the test computes it."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.CSS_SELECTOR, selector)
    geometry = driver.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return [r.width, r.height, arguments[0].naturalWidth, arguments[0].naturalHeight];", element)
    width, height, natural_w, natural_h = geometry
    scale = min(width / natural_w, height / natural_h)
    pad_x, pad_y = (width - natural_w * scale) / 2, (height - natural_h * scale) / 2
    # Offsets from the element's centre, in whole CSS pixels, aimed at the middle of the pixel.
    dx, dy = round(pad_x + (x + 0.5) * scale - width / 2), round(pad_y + (y + 0.5) * scale - height / 2)
    ActionChains(driver).move_to_element_with_offset(element, dx, dy).click().perform()
    return (int((dx + width / 2 - pad_x) / scale), int((dy + height / 2 - pad_y) / scale))
