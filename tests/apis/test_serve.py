"""The real server (tools/serve.py on a free port of 127.0.0.1) with the shipped model.

HTTP: every task through POST /v1/infer equals the Python API, so do region questions and
follow-ups with a history; 4 concurrent clients, bad input answers 400 with the API's message,
an upload over the limit answers 413, health afterwards.
Browser: headless Debian Chromium (selenium + the system chromedriver) uses the page: tasks,
a region clicked on the image, a follow-up in the chat.
The server and the Python API each load the model once for the whole module.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from visionllm.apis.conversation import answer_text
from visionllm.apis.inputs import InputError, load_image
from visionllm.apis.web_page import PRESETS, REGION_INSTRUCTION, REGION_PRESET, preset_instruction, region_words
from visionllm.datasets.shapes import build_split
from browser_page import PageWait, chromium_or_skip, click_image_pixel, fetch_picture, page_json
from repo_paths import REPO

pytestmark = pytest.mark.slow
httpx = pytest.importorskip("httpx")

CONFIG = os.path.join(REPO, "configs", "visionllm_tiny_shapes.py")
CHECKPOINT = os.path.join(REPO, "checkpoints", "visionllm_tiny_shapes.pth")
LIMIT_MB = 1.0  # small, so the over-limit upload is cheap; shapes images are a few kB
STARTUP_GUARD_S = 1800  # against a hang only (a busy shared machine is slow); a failed start exits
SCORE_TOL, BOX_TOL = 1e-4, 1e-2  # two processes, same weights and inputs: float noise only


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def shapes_split(tmp_path_factory):
    """Two shapes val images of the README's split (seed 0): (folder, annotation dicts)."""
    out = str(tmp_path_factory.mktemp("shapes"))
    return out, build_split("val", 2, 0, out)


@pytest.fixture(scope="module")
def val_images(shapes_split):
    """The two val images, each with one referring expression."""
    out, split = shapes_split
    expressions = {ref["image_id"]: ref["sentences"][0]["raw"] for ref in reversed(split["refs"])}
    return [(os.path.join(out, "images", "val", image["file_name"]), expressions.get(image["id"], "the shape"))
            for image in split["instances"]["images"]]


@pytest.fixture(scope="module")
def object_boxes(shapes_split, val_images):
    """Image path → its objects' boxes [x1, y1, x2, y2] (pixels), in annotation order."""
    _, split = shapes_split
    boxes = {}
    for image, (path, _) in zip(split["instances"]["images"], val_images):
        boxes[path] = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                       for a in split["instances"]["annotations"] if a["image_id"] == image["id"]]
    return boxes


@pytest.fixture(scope="module")
def server_process(tmp_path_factory):
    """tools/serve.py started (not yet ready); always terminated at the end of the module."""
    folder = tmp_path_factory.mktemp("server")
    port = _free_port()
    log_path = folder / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, os.path.join(REPO, "tools", "serve.py"), CONFIG, CHECKPOINT, "--port", str(port),
             "--max-upload-mb", str(LIMIT_MB), "--examples-dir", str(folder / "examples")],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"))
    try:
        yield process, f"http://127.0.0.1:{port}", log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def python_api(server_process):
    """The Python API in this process (loaded while the server process loads its own copy)."""
    from visionllm.apis.inferencer import VisionLLMInferencer

    return VisionLLMInferencer(CONFIG, CHECKPOINT)


@pytest.fixture(scope="module")
def server(server_process):
    """The base URL once GET /healthz answers."""
    process, url, log_path = server_process
    deadline = time.monotonic() + STARTUP_GUARD_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                return url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the server did not answer /healthz:\n{log_path.read_text()[-3000:]}")


def _instructions(expression: str = "the shape") -> dict:
    """One instruction per task: the page's presets (so they are checked to be valid too)."""
    return {preset: preset_instruction(preset, expression=expression) for preset in PRESETS}


def _post(url: str, path: str, instruction: str, **fields):
    with open(path, "rb") as handle:
        data = handle.read()
    return httpx.post(url + "/v1/infer", files={"image": (os.path.basename(path), data, "image/png")},
                      data=dict(instruction=instruction, **fields), timeout=300)


def _assert_same(answer: dict, result, image_size, threshold: float) -> None:
    """The JSON answer against a VisionLLMResult of the Python API."""
    assert answer["task"] == result.task
    assert answer["text"] == result.text
    assert answer["image_size"] == list(image_size)
    keep = [i for i, s in enumerate(result.scores) if s >= threshold or result.task == "grounding"]
    assert [o["name"] for o in answer["objects"]] == [result.names[i] for i in keep]
    for obj, i in zip(answer["objects"], keep):
        assert obj["score"] == pytest.approx(float(result.scores[i]), abs=SCORE_TOL)
        np.testing.assert_allclose(obj["box"], result.boxes[i], atol=BOX_TOL)
        if result.polygons is None:
            assert obj["polygon"] is None
        else:
            np.testing.assert_allclose(obj["polygon"], result.polygons[i], atol=BOX_TOL)
    assert answer["elapsed_ms"] > 0
    if result.regions is None:
        assert answer["regions"] is None
    else:
        np.testing.assert_allclose(answer["regions"], result.regions, atol=1e-4)


def test_every_task_equals_the_python_api(python_api, server, val_images):
    tasks_seen = set()
    for path, expression in val_images:
        size = Image.open(path).size
        for preset, instruction in _instructions(expression).items():
            response = _post(server, path, instruction, score_threshold="0")
            assert response.status_code == 200, response.text
            result = python_api(path, instruction)
            _assert_same(response.json(), result, size, threshold=0.0)
            tasks_seen.add(result.task)
            if result.task == "segmentation":
                assert all(o["polygon"] is not None for o in response.json()["objects"])
    assert tasks_seen == {"detection", "segmentation", "grounding", "caption", "vqa"}
    # The default threshold (0.3) leaves out the low-scoring slots, as the pictures do.
    path, expression = val_images[0]
    instruction = _instructions(expression)["detect"]
    response = _post(server, path, instruction)
    assert response.status_code == 200
    _assert_same(response.json(), python_api(path, instruction), Image.open(path).size, threshold=0.3)


def test_concurrent_clients_all_answered(python_api, server, val_images):
    """40 requests from 4 clients: all 200, each answer its own image's; health checks are
    answered while model calls are pending (the model does not block the event loop)."""
    instruction = _instructions()["detect"]
    expected = {path: python_api(path, instruction) for path, _ in val_images}
    answers, errors = [], []

    def client(index: int) -> None:
        with httpx.Client(timeout=300) as session:
            for k in range(10):
                path = val_images[(index + k) % len(val_images)][0]
                with open(path, "rb") as handle:
                    response = session.post(server + "/v1/infer", data=dict(instruction=instruction),
                                            files={"image": ("img.png", handle.read(), "image/png")})
                if response.status_code == 200:
                    answers.append((path, response.json()))
                else:
                    errors.append((response.status_code, response.text))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    health = []
    while any(thread.is_alive() for thread in threads):
        response = httpx.get(server + "/healthz", timeout=60)
        health.append((response.status_code, response.json()["pending"]))
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    assert errors == [] and len(answers) == 40
    for path, answer in answers:
        _assert_same(answer, expected[path], Image.open(path).size, threshold=0.3)
    assert all(status == 200 for status, _ in health)
    assert max(pending for _, pending in health) >= 1, "no health check was answered while the model worked"


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert message and "\n" not in message
    return message


def test_bad_input_answers_400_with_the_api_message(python_api, server, val_images, tmp_path):
    path, _ = val_images[0]
    good = _instructions()["caption"]
    # Bad bytes: the message the Python API gives for the same bytes in a file of that name.
    bad_file = tmp_path / "bad.png"
    bad_file.write_bytes(b"this is not an image")
    with pytest.raises(InputError) as api_error:
        python_api(str(bad_file), good)
    message = _error(_post(server, str(bad_file), good), 400)
    assert message == str(api_error.value).replace(str(bad_file), "bad.png")
    # A truncated PNG passes the header check; only decoding it completely finds the problem.
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(path, "rb").read()[:600])
    assert _error(_post(server, str(truncated), good), 400).startswith("cannot read image truncated.png")
    # No <image> in an instruction in the template syntax: exactly the API's message. (A plain
    # request without <image> is no error: the model reads it with the image in front.)
    no_image = 'Detect {"star": <c0>}. Answer as a list of (c, x1, y1, x2, y2).'
    with pytest.raises(InputError) as api_error:
        python_api(path, no_image)
    assert _error(_post(server, path, no_image), 400) == str(api_error.value)
    # Missing fields, a bad threshold.
    with open(path, "rb") as handle:
        data = handle.read()
    no_image_field = httpx.post(server + "/v1/infer", data=dict(instruction=good), timeout=60)
    assert "'image'" in _error(no_image_field, 400)
    no_instruction = httpx.post(server + "/v1/infer", files={"image": ("a.png", data, "image/png")}, timeout=60)
    assert "'instruction'" in _error(no_instruction, 400)
    assert "score_threshold" in _error(_post(server, path, good, score_threshold="1.5"), 400)
    assert "score_threshold" in _error(_post(server, path, good, score_threshold="high"), 400)


def test_regions_and_history_equal_the_python_api(python_api, server, val_images, object_boxes):
    """A question about one region, one about two, and a follow-up after a detection turn: the
    answers through POST /v1/infer equal the Python API's with the same regions / history."""
    path, _ = val_images[0]
    size = Image.open(path).size
    boxes = object_boxes[path]
    assert len(boxes) >= 2
    response = _post(server, path, REGION_INSTRUCTION, regions=json.dumps(boxes[:1]))
    assert response.status_code == 200, response.text
    result = python_api(path, REGION_INSTRUCTION, regions=boxes[:1])
    assert result.task == "region_vqa" and result.text
    _assert_same(response.json(), result, size, threshold=0.3)
    np.testing.assert_allclose(response.json()["regions"], boxes[:1])
    two = "<image> Is <region> left of <region>?"
    response = _post(server, path, two, regions=json.dumps(boxes[1::-1]))
    assert response.status_code == 200, response.text
    _assert_same(response.json(), python_api(path, two, regions=boxes[1::-1]), size, threshold=0.3)
    # A follow-up: the first turn (detection) written by answer_text, the question without <image>.
    detect = preset_instruction("detect")
    history = [dict(user=detect, assistant=answer_text(python_api(path, detect)))]
    question = "How many shapes are there?"
    response = _post(server, path, question, history=json.dumps(history))
    assert response.status_code == 200, response.text
    follow_up = python_api(path, question, history=history)
    _assert_same(response.json(), follow_up, size, threshold=0.3)
    # ... and a region question as the follow-up.
    response = _post(server, path, "What colour is <region>?", regions=json.dumps(boxes[1:2]),
                     history=json.dumps(history))
    assert response.status_code == 200, response.text
    _assert_same(response.json(), python_api(path, "What colour is <region>?", regions=boxes[1:2], history=history),
                 size, threshold=0.3)


def test_bad_regions_and_history_answer_400(python_api, server, val_images):
    path, _ = val_images[0]
    width, height = Image.open(path).size
    assert "'regions' is not valid JSON" in _error(_post(server, path, REGION_INSTRUCTION, regions="[[1, 2, 3"), 400)
    assert "'history' is not valid JSON" in _error(_post(server, path, "Why?", history="[{user: 1}]"), 400)
    assert "history turn 0 must be" in _error(_post(server, path, "Why?", history='[{"user": "<image> a"}]'), 400)
    # Boxes the Python API refuses: exactly its message.
    history = [dict(user="<image> Describe the image.", assistant="a red circle")]
    for instruction, regions, turns in (
            (REGION_INSTRUCTION, [[0, 0, width + 5, 10]], None),  # outside the image
            (REGION_INSTRUCTION, [[5, 5, 5, 10]], None),  # no area
            (REGION_INSTRUCTION, None, None),  # a placeholder without its box
            ("<image> Describe the image.", [[0, 0, 5, 5]], None),  # a box without a placeholder
            ("<image> And now?", None, history)):  # the image shown twice in a conversation
        with pytest.raises(InputError) as api_error:
            python_api(path, instruction, regions=regions, history=turns)
        fields = dict(regions=json.dumps(regions)) if regions else {}
        if turns:
            fields["history"] = json.dumps(turns)
        assert _error(_post(server, path, instruction, **fields), 400) == str(api_error.value)


def test_upload_over_the_limit_answers_413(server):
    """Garbage bytes over the limit: 413 (were they decoded first, the answer would be 400)."""
    big = os.urandom(int(LIMIT_MB * 2 ** 20) + 4096)
    declared = httpx.post(server + "/v1/infer", files={"image": ("big.png", big, "image/png")},
                          data=dict(instruction="<image> Write a short caption for the image."), timeout=60)
    assert "limit" in _error(declared, 413)
    # Streamed without a Content-Length: counted while it arrives.
    boundary = "visionllmboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"instruction\"\r\n\r\n<image> Caption it.\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()

    def chunks():
        yield head
        for start in range(0, len(big), 65536):
            yield big[start:start + 65536]
        yield f"\r\n--{boundary}--\r\n".encode()

    streamed = httpx.post(server + "/v1/infer", content=chunks(), timeout=60,
                          headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert "limit" in _error(streamed, 413)


def test_page_in_headless_chromium(python_api, server, val_images, object_boxes):
    """The page: upload an image, detect, caption; the drawn picture and the JSON appear. Then a
    region clicked on the image (two corners) and the region preset; a follow-up in the chat.
    Screenshots: outputs/serve_page_detection.png, outputs/serve_page.png (the caption), then
    outputs/serve_page_conversation.png (the region question and its follow-up)."""
    driver = chromium_or_skip()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    path, _ = val_images[1]
    wait = WebDriverWait(driver, 300)  # a wrong wait fails in minutes, not a quarter hour
    try:
        driver.get(server + "/")
        upload = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#input-image input[type=file]")))
        upload.send_keys(path)
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#input-image img")))
        # detection (the default preset)
        instruction = driver.find_element(By.CSS_SELECTOR, "#instruction textarea").get_attribute("value")
        assert instruction == preset_instruction("detect")
        driver.find_element(By.CSS_SELECTOR, "#run").click()
        wait.until(lambda d: "detection" in d.find_element(By.ID, "result-json").text)
        detection = python_api(path, instruction)
        _assert_same(page_json(driver), detection, Image.open(path).size, threshold=0.3)
        picture = driver.find_element(By.CSS_SELECTOR, "#result-image img")
        _assert_drawn(fetch_picture(picture.get_attribute("src")), path, detection)
        assert "detection" in driver.find_element(By.ID, "elapsed").text
        os.makedirs(os.path.join(REPO, "outputs"), exist_ok=True)
        driver.save_screenshot(os.path.join(REPO, "outputs", "serve_page_detection.png"))
        # caption: the preset rewrites the instruction; the answer text appears
        driver.find_element(By.CSS_SELECTOR, "[data-testid='caption-radio-label']").click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#instruction textarea").get_attribute("value")
                   == preset_instruction("caption"))
        driver.find_element(By.CSS_SELECTOR, "#run").click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#result-text textarea").get_attribute("value"))
        caption = python_api(path, preset_instruction("caption"))
        assert driver.find_element(By.CSS_SELECTOR, "#result-text textarea").get_attribute("value") == caption.text
        wait.until(lambda d: "caption" in d.find_element(By.ID, "result-json").text)
        _assert_same(page_json(driver), caption, Image.open(path).size, threshold=0.3)
        driver.save_screenshot(os.path.join(REPO, "outputs", "serve_page.png"))
        _region_and_follow_up(driver, wait, python_api, path, object_boxes[path][0])
    finally:
        driver.quit()


def _region_and_follow_up(driver, wait, python_api, path: str, box) -> None:
    """Click two opposite corners of an object's box on the input image: the regions box holds
    them in pixels of the uploaded image; the region preset answers as the Python API does with
    that region; a follow-up in the chat answers as the Python API does with the history."""
    from selenium.webdriver.common.by import By

    wait = PageWait(wait)
    corners = [(int(box[0]) + 1, int(box[1]) + 1), (int(box[2]) - 1, int(box[3]) - 1)]
    clicked = [click_image_pixel(driver, "#input-image img", *corners[0])]
    # The second click reads the first's corner from the page state: wait until it is there.
    wait.until(lambda d: "first corner" in d.find_element(By.ID, "corner-note").text)
    clicked.append(click_image_pixel(driver, "#input-image img", *corners[1]))
    regions_box = (By.CSS_SELECTOR, "#regions textarea, #regions input")
    wait.until(lambda d: d.find_element(*regions_box).get_attribute("value").count(",") == 3)
    shown = [float(v) for v in driver.find_element(*regions_box).get_attribute("value").split(",")]
    expected = [min(clicked[0][0], clicked[1][0]), min(clicked[0][1], clicked[1][1]),
                max(clicked[0][0], clicked[1][0]), max(clicked[0][1], clicked[1][1])]
    # The page maps the click to the image's pixel grid; the test's own mapping may round the other way.
    np.testing.assert_allclose(shown, expected, atol=1.0)
    driver.find_element(By.CSS_SELECTOR, f"[data-testid='{REGION_PRESET}-radio-label']").click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#instruction textarea").get_attribute("value")
               == REGION_INSTRUCTION)
    size = Image.open(path).size
    region = python_api(path, REGION_INSTRUCTION, regions=[shown])
    driver.find_element(By.CSS_SELECTOR, "#run").click()
    # The page's JSON names the task the Python API reads the instruction as.
    wait.until(lambda d: f'"{region.task}"' in d.find_element(By.ID, "result-json").text)
    _assert_same(page_json(driver), region, size, threshold=0.3)
    assert driver.find_element(By.CSS_SELECTOR, "#result-text textarea").get_attribute("value") == region.text
    # The follow-up: the region turn is in the history with its box as words.
    question = "How many shapes are there?"
    history = [dict(user=region_words(REGION_INSTRUCTION, [shown], region.image_size), assistant=answer_text(region))]
    follow_up = python_api(path, question, history=history)
    bots = (By.CSS_SELECTOR, "#chat [data-testid='bot']")
    wait.until(lambda d: len(d.find_elements(*bots)) == 1)
    driver.find_element(By.CSS_SELECTOR, "#follow-up textarea").send_keys(question)
    driver.find_element(By.CSS_SELECTOR, "#ask").click()
    wait.until(lambda d: len(d.find_elements(*bots)) == 2)
    assert driver.find_elements(*bots)[1].text.strip() == follow_up.text
    assert driver.find_element(By.CSS_SELECTOR, "#result-text textarea").get_attribute("value") == follow_up.text
    _assert_same(page_json(driver), follow_up, size, threshold=0.3)
    driver.set_window_size(1400, 1750)  # the whole page: the region drawn and the chat below
    driver.execute_script("window.scrollTo(0, 0);")
    driver.save_screenshot(os.path.join(REPO, "outputs", "serve_page_conversation.png"))
    driver.find_element(By.CSS_SELECTOR, "#new-conversation").click()
    wait.until(lambda d: len(d.find_elements(*bots)) == 0)


def _assert_drawn(shown: np.ndarray, path: str, result) -> None:
    """The page's picture is the Python API's result drawn by visionllm.visualization (pixels may
    differ only where float noise moves a line), and it differs from the plain image."""
    from visionllm.visualization import draw_result

    expected_file = os.path.join(os.path.dirname(path), "expected_drawn.png")
    expected = np.asarray(Image.open(draw_result(load_image(path), result, expected_file)).convert("RGB"))
    assert shown.shape == expected.shape
    assert (shown != expected).any(axis=2).mean() < 0.01
    plain = np.asarray(Image.fromarray(load_image(path)).resize(expected.shape[1::-1], Image.NEAREST))
    assert (plain != expected).any(axis=2).mean() > 0.001
