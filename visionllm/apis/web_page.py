"""The web page (Gradio) served at ``/`` next to the HTTP API.

A person uploads an image or picks an example, picks a task preset that writes an editable
instruction in the model's instruction language (or types a free one) and sees the picture with
boxes, polygons and names drawn, the text answer, the JSON answer of ``POST /v1/infer`` and the
time taken. Regions for ``<region>`` placeholders are typed or clicked on the image (two opposite
corners); each run starts a conversation shown in a chat, where follow-up questions are answered
with the earlier turns as history. Model calls go through the same
:class:`~visionllm.apis.server.ModelService` queue and :func:`~visionllm.apis.server.result_to_dict`
as the HTTP API.
"""
import os
import random
import re
import shutil
import tempfile
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from visionllm.apis.conversation import answer_text
from visionllm.apis.inputs import InputError
from visionllm.apis.server import DEFAULT_SCORE_THRESHOLD, ModelService, open_upload
from visionllm.instructions import REGION_PLACEHOLDER, count_regions
from visionllm.datasets.shapes import SHAPE_KINDS, build_split
from visionllm.tasks import build_instruction
from visionllm.visualization import VisionLLMVisualizer

# Preset label → (task of build_instruction, what the preset fills in).
PRESETS = {
    "detect": "detection",
    "segment": "segmentation",
    "ground": "grounding",
    "caption": "caption",
    "answer a question": "vqa",
}
# A question about a clicked region (region VQA: a <region> placeholder, as `make demo` asks).
REGION_PRESET = "ask about a region"
REGION_INSTRUCTION = f"<image> What colour is {REGION_PLACEHOLDER}?"
DEFAULT_EXPRESSION = "the red circle"
DEFAULT_QUESTION = "how many shapes are there?"
ELEM_IDS = dict(image="input-image", preset="task-preset", instruction="instruction", run="run",
                picture="result-image", text="result-text", json="result-json", elapsed="elapsed",
                regions="regions", clear_regions="clear-regions", corner="corner-note", chat="chat",
                follow_up="follow-up", ask="ask", new_conversation="new-conversation")


def preset_instruction(preset: str, categories: Sequence[str] = SHAPE_KINDS,
                       expression: str = DEFAULT_EXPRESSION, question: str = DEFAULT_QUESTION) -> str:
    """The evaluation phrasing (template 0) of a task preset, with the category list, referring
    expression or question filled in for the user to edit; the region preset's question."""
    if preset == REGION_PRESET:
        return REGION_INSTRUCTION
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {list(PRESETS) + [REGION_PRESET]}")
    task = PRESETS[preset]
    return build_instruction(task, random.Random(0), categories=list(categories), expression=expression,
                             question=question, template_index=0).text


def parse_region_text(text: Optional[str]) -> Optional[List[List[float]]]:
    """The page's regions box (``"x1,y1,x2,y2"`` per region, regions separated by ``;`` or new
    lines; brackets and spaces allowed) → ``[[x1, y1, x2, y2], ...]``, or None when blank. Raises
    :class:`InputError` for an entry that is not four numbers (the boxes themselves are checked
    against the image and the instruction by the inference API)."""
    boxes = []
    for entry in re.split(r"[;\n]", text or ""):
        entry = entry.strip().strip("[]()").strip()
        if not entry:
            continue
        try:
            values = [float(v) for v in re.split(r"[,\s]+", entry)]
        except ValueError:
            values = []
        if len(values) != 4:
            raise InputError(f"regions: {entry!r} is not four numbers x1,y1,x2,y2")
        boxes.append(values)
    return boxes or None


def format_region(box: Sequence[float]) -> str:
    """One box as the regions box writes it: ``"x1,y1,x2,y2"`` (integers shown without ``.0``)."""
    return ",".join(f"{v:g}" for v in box)


def add_corner(regions_text: str, corner: Optional[Tuple[int, int]], point: Sequence[int]):
    """One click on the image at ``point`` (pixels of the image as uploaded): the first click of
    a pair is kept as ``corner``; the second closes the box of the two corners and appends it to
    ``regions_text``. Returns ``(regions text, corner or None, a note for the user)``."""
    x, y = int(point[0]), int(point[1])
    if corner is None:
        return regions_text, (x, y), f"first corner ({x}, {y}): click the opposite corner"
    (cx, cy), box = corner, [min(corner[0], x), min(corner[1], y), max(corner[0], x), max(corner[1], y)]
    if box[0] == box[2] or box[1] == box[3]:
        return regions_text, None, f"corners ({cx}, {cy}) and ({x}, {y}) enclose no area: click two new corners"
    text = format_region(box)
    regions_text = f"{regions_text.strip()}; {text}" if (regions_text or "").strip() else text
    return regions_text, None, f"region {text} added"


def regions_for(instruction: str, regions_text: str) -> Optional[List[List[float]]]:
    """The regions box's boxes for an instruction with ``<region>`` placeholders; None for one
    without (the box may still hold an earlier question's region)."""
    return parse_region_text(regions_text) if count_regions(instruction) else None


def region_words(instruction: str, regions, image_size: Tuple[int, int]) -> str:
    """``instruction`` with each ``<region>`` written as its box in the words of ``answer_text``
    (``[x1, y1, x2, y2]`` divided by the image width / height, two decimals), as an earlier turn
    of the history carries it: the boxes are given for the newest instruction only."""
    height, width = image_size
    for box in regions or []:
        x1, y1, x2, y2 = box[0] / width, box[1] / height, box[2] / width, box[3] / height
        instruction = instruction.replace(REGION_PLACEHOLDER, f"[{x1:.2f}, {y1:.2f}, {x2:.2f}, {y2:.2f}]", 1)
    return instruction


def write_examples(out_dir: str, count: int = 3, seed: int = 0) -> List[str]:
    """The first ``count`` shapes val images of the README's split (``make_shapes.py --seed 0``
    writes the same files), generated into ``out_dir``."""
    build_split("val", count, seed, out_dir)
    folder = os.path.join(out_dir, "images", "val")
    return [os.path.join(folder, f"val_{i + 1:06d}.png") for i in range(count)]


def _drawn_picture(image: Image.Image, result, score_threshold: float) -> np.ndarray:
    """The result drawn on the image by the package's visualizer (the inferencer's drawer)."""
    from visionllm.apis.inputs import load_image

    visualizer = VisionLLMVisualizer.get_instance("visionllm_web_page")
    return visualizer.draw_result(load_image(image), result, score_threshold)


def build_page(service: ModelService, examples: Sequence[str] = (), categories: Sequence[str] = SHAPE_KINDS):
    """The Gradio Blocks of the page; its handlers run the model through ``service``."""
    import gradio as gr

    def ask_model(image_path, instruction, regions_text, score_threshold, history):
        """One model call; returns the outputs of the result views and the turn for the history."""
        if not image_path:
            raise gr.Error("upload an image or pick an example first")
        threshold = float(score_threshold)
        try:
            with open(image_path, "rb") as handle:
                picture = open_upload(handle.read(), os.path.basename(image_path))
            regions = regions_for(instruction, regions_text)
            result, answer = service.infer(picture, instruction, threshold, regions=regions, history=history or None)
        except InputError as err:
            raise gr.Error(str(err)) from None
        drawn = _drawn_picture(picture, result, threshold)
        elapsed = f"**{answer['task']}** in {answer['elapsed_ms']:.0f} ms (model call on this server)"
        said = answer_text(result, threshold)
        turn = dict(user=region_words(instruction, regions, result.image_size), assistant=said)
        chat = [dict(role="user", content=instruction), dict(role="assistant", content=said or "(no answer)")]
        return (drawn, answer["text"] or "", answer, elapsed), turn, chat

    def run(image_path, instruction, regions_text, score_threshold):
        views, turn, chat = ask_model(image_path, instruction, regions_text, score_threshold, None)
        return (*views, chat, [turn])

    def follow_up(image_path, question, regions_text, score_threshold, history, chat):
        if not history:
            raise gr.Error("run an instruction on the image first: follow-ups continue its conversation")
        views, turn, said = ask_model(image_path, question, regions_text, score_threshold, history)
        return (*views, list(chat or []) + said, list(history) + [turn], "")

    with gr.Blocks(title="VisionLLM", analytics_enabled=False) as page:
        gr.Markdown("# VisionLLM\nUpload an image or pick an example, choose a task (the instruction is "
                    "editable: change the category list, the expression or the question), then run. "
                    "For `<region>` in the instruction, click two opposite corners on the image (or type "
                    "`x1,y1,x2,y2` in pixels; `;` between regions). Each run starts a conversation: ask "
                    "follow-ups (without `<image>`) in the chat. The same answer is served as JSON by "
                    "`POST /v1/infer`.")
        history = gr.State([])
        corner = gr.State(None)
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", label="image (click two corners to add a region)",
                                 sources=["upload"], elem_id=ELEM_IDS["image"])
                if examples:
                    gr.Examples(examples=[[path] for path in examples], inputs=[image], label="example images")
                preset = gr.Radio(list(PRESETS) + [REGION_PRESET], value="detect", label="task",
                                  elem_id=ELEM_IDS["preset"])
                instruction = gr.Textbox(value=preset_instruction("detect", categories), lines=3,
                                         label="instruction (must contain <image>)",
                                         elem_id=ELEM_IDS["instruction"])
                with gr.Row():
                    regions = gr.Textbox(label="regions for <region>: x1,y1,x2,y2 (pixels); ...", scale=4,
                                         elem_id=ELEM_IDS["regions"])
                    clear = gr.Button("clear regions", scale=1, elem_id=ELEM_IDS["clear_regions"])
                corner_note = gr.Markdown(elem_id=ELEM_IDS["corner"])
                threshold = gr.Slider(0.0, 1.0, value=DEFAULT_SCORE_THRESHOLD, step=0.05,
                                      label="score threshold")
                button = gr.Button("Run", variant="primary", elem_id=ELEM_IDS["run"])
            with gr.Column():
                picture = gr.Image(label="result", format="png", interactive=False, elem_id=ELEM_IDS["picture"])
                elapsed = gr.Markdown(elem_id=ELEM_IDS["elapsed"])
                text = gr.Textbox(label="text answer", interactive=False, elem_id=ELEM_IDS["text"])
                answer = gr.JSON(label="JSON (as POST /v1/infer answers)", open=True, elem_id=ELEM_IDS["json"])
        chat = gr.Chatbot(label="conversation (each Run starts one)", height=300, elem_id=ELEM_IDS["chat"])
        with gr.Row():
            question = gr.Textbox(label="follow-up question (no <image>)", scale=4, elem_id=ELEM_IDS["follow_up"])
            ask = gr.Button("Ask", scale=1, elem_id=ELEM_IDS["ask"])
            new = gr.Button("new conversation", scale=1, elem_id=ELEM_IDS["new_conversation"])

        def on_click(regions_text, pending, event: gr.SelectData):
            return add_corner(regions_text, tuple(pending) if pending else None, event.index)

        views = [picture, text, answer, elapsed]
        preset.change(lambda name: preset_instruction(name, categories), inputs=preset, outputs=instruction)
        image.select(on_click, inputs=[regions, corner], outputs=[regions, corner, corner_note])
        # Another image: its regions and conversation start over.
        image.change(lambda: ("", None, "", [], []), outputs=[regions, corner, corner_note, chat, history])
        clear.click(lambda: ("", None, ""), outputs=[regions, corner, corner_note])
        button.click(run, inputs=[image, instruction, regions, threshold], outputs=views + [chat, history])
        follow_inputs = [image, question, regions, threshold, history, chat]
        ask.click(follow_up, inputs=follow_inputs, outputs=views + [chat, history, question])
        question.submit(follow_up, inputs=follow_inputs, outputs=views + [chat, history, question])
        new.click(lambda: ([], []), outputs=[chat, history])
    return page


def mount_page(app, service: ModelService, max_bytes: int, examples_dir: Optional[str] = None,
               num_examples: int = 3, categories: Sequence[str] = SHAPE_KINDS):
    """Mount the page at ``/`` of ``app`` (after the API routes, which keep precedence).

    Example images are written to ``examples_dir`` (a temporary folder removed at shutdown when
    not given).
    """
    import atexit

    import gradio as gr

    if examples_dir is None:
        examples_dir = tempfile.mkdtemp(prefix="visionllm-serve-examples-")
        atexit.register(shutil.rmtree, examples_dir, True)
    examples = write_examples(examples_dir, num_examples) if num_examples > 0 else []
    page = build_page(service, examples, categories)
    return gr.mount_gradio_app(app, page, path="/", allowed_paths=[os.path.abspath(examples_dir)],
                               max_file_size=max_bytes, footer_links=[], run_history=False)
