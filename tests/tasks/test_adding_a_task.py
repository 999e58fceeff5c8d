"""Adding a task is one TaskSpec registered in TASKS: the instruction builder, the reader, the
data pipeline, the metric router and the model's routing all pick it up."""
import random
import re

import pytest

from visionllm.registry import TASKS
from visionllm.tasks import TaskSpec, build_instruction, get_task, read_instruction, task_names
from visionllm.tasks import spec as spec_module
from visionllm.tasks.reading import asks_question, task_of_instruction

_READ = re.compile(r"\bread\b", re.IGNORECASE)


class TextReadingTask(TaskSpec):
    """Reading the words written in an image (a text task)."""

    name = "text_reading"
    metric = dict(type="CaptionMetric")
    templates = ("<image> Read the text in the image.", "Read out every word written in <image>.")

    def build(self, results, rng, template_index=None, **_):
        results["target_text"] = results["gt_texts"][0]
        return self.instruction(rng, template_index), []

    def recognises(self, parts):
        return parts.output_format is None and bool(_READ.search(parts.text)) and not asks_question(parts.text)


@pytest.fixture
def text_reading():
    TASKS.register_module(name="text_reading", module=TextReadingTask)
    task_of_instruction.cache_clear()
    yield get_task("text_reading")
    TASKS._module_dict.pop("text_reading")
    spec_module._INSTANCES.pop("text_reading", None)
    task_of_instruction.cache_clear()


def test_a_registered_task_is_built_read_and_routed(text_reading):
    assert "text_reading" in task_names()
    built = build_instruction("text_reading", random.Random(0), template_index=1)
    assert built.text == "Read out every word written in <image>."
    # Captioning is the fallback: the new task's own phrasing wins over it ...
    assert read_instruction("<image> Please read the text on the sign.").task == "text_reading"
    # ... and without the new task's words it is still a caption.
    assert read_instruction("<image> Describe the picture.").task == "caption"
    assert task_of_instruction(built.text).structured is False

    from visionllm.datasets.transforms import BuildInstruction
    results = BuildInstruction(template_index=0)(dict(task="text_reading", gt_texts=["STOP"]))
    assert results["instruction"] == "<image> Read the text in the image."
    assert results["target_text"] == "STOP" and results["categories"] == []

    from visionllm.evaluation import MultiTaskMetric
    from visionllm.evaluation.caption_metric import CaptionMetric
    metric = MultiTaskMetric(task_metrics=dict(text_reading=dict()))
    assert isinstance(metric.metrics["text_reading"], CaptionMetric)


def test_unknown_and_unregistered_tasks_are_refused():
    with pytest.raises(ValueError, match="unknown task 'text_reading'"):
        get_task("text_reading")
    assert read_instruction("<image> Please read the text on the sign.").task == "caption"
