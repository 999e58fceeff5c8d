"""The web page (Gradio) served at ``/`` next to the HTTP API.

A person uploads an image or picks an example, picks a task preset that writes an editable
instruction in the model's instruction language (or types a free one) and sees the picture with
boxes, polygons and names drawn, the text answer, the JSON answer of ``POST /v1/infer`` and the
time taken. Model calls go through the same :class:`~visionllm.apis.server.ModelService` queue
and :func:`~visionllm.apis.server.result_to_dict` as the HTTP API.
"""
import os
import random
import shutil
import tempfile
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image

from visionllm.apis.inputs import InputError
from visionllm.apis.server import DEFAULT_SCORE_THRESHOLD, ModelService, open_upload
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
DEFAULT_EXPRESSION = "the red circle"
DEFAULT_QUESTION = "how many shapes are there?"
ELEM_IDS = dict(image="input-image", preset="task-preset", instruction="instruction", run="run",
                picture="result-image", text="result-text", json="result-json", elapsed="elapsed")


def preset_instruction(preset: str, categories: Sequence[str] = SHAPE_KINDS,
                       expression: str = DEFAULT_EXPRESSION, question: str = DEFAULT_QUESTION) -> str:
    """The evaluation phrasing (template 0) of a task preset, with the category list, referring
    expression or question filled in for the user to edit."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {list(PRESETS)}")
    task = PRESETS[preset]
    return build_instruction(task, random.Random(0), categories=list(categories), expression=expression,
                             question=question, template_index=0).text


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
    """The Gradio Blocks of the page; its handler runs the model through ``service``."""
    import gradio as gr

    def run(image_path: Optional[str], instruction: str, score_threshold: float):
        if not image_path:
            raise gr.Error("upload an image or pick an example first")
        try:
            with open(image_path, "rb") as handle:
                picture = open_upload(handle.read(), os.path.basename(image_path))
            result, answer = service.infer(picture, instruction, float(score_threshold))
        except InputError as err:
            raise gr.Error(str(err)) from None
        drawn = _drawn_picture(picture, result, float(score_threshold))
        elapsed = f"**{answer['task']}** in {answer['elapsed_ms']:.0f} ms (model call on this server)"
        return drawn, answer["text"] or "", answer, elapsed

    with gr.Blocks(title="VisionLLM", analytics_enabled=False) as page:
        gr.Markdown("# VisionLLM\nUpload an image or pick an example, choose a task (the instruction is "
                    "editable: change the category list, the expression or the question), then run. "
                    "The same answer is served as JSON by `POST /v1/infer`.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", label="image", sources=["upload"], elem_id=ELEM_IDS["image"])
                if examples:
                    gr.Examples(examples=[[path] for path in examples], inputs=[image], label="example images")
                preset = gr.Radio(list(PRESETS), value="detect", label="task", elem_id=ELEM_IDS["preset"])
                instruction = gr.Textbox(value=preset_instruction("detect", categories), lines=3,
                                         label="instruction (must contain <image>)",
                                         elem_id=ELEM_IDS["instruction"])
                threshold = gr.Slider(0.0, 1.0, value=DEFAULT_SCORE_THRESHOLD, step=0.05,
                                      label="score threshold")
                button = gr.Button("Run", variant="primary", elem_id=ELEM_IDS["run"])
            with gr.Column():
                picture = gr.Image(label="result", format="png", interactive=False, elem_id=ELEM_IDS["picture"])
                elapsed = gr.Markdown(elem_id=ELEM_IDS["elapsed"])
                text = gr.Textbox(label="text answer", interactive=False, elem_id=ELEM_IDS["text"])
                answer = gr.JSON(label="JSON (as POST /v1/infer answers)", open=True, elem_id=ELEM_IDS["json"])
        preset.change(lambda name: preset_instruction(name, categories), inputs=preset, outputs=instruction)
        button.click(run, inputs=[image, instruction, threshold], outputs=[picture, text, answer, elapsed])
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
