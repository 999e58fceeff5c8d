"""The shipped config's question and grounding readers use the words of the shapes data: the
kinds the model detects and the colour words its region answers use (a word missing here would
leave its questions to the LLM, a word the model never says would make them wrong)."""
import os

from mmengine.config import Config

from repo_paths import REPO
from visionllm.datasets.shape_colours import COLOUR_NAMES
from visionllm.datasets.shapes import COLOURS, SHAPE_KINDS


def test_the_shipped_readers_use_the_shapes_data_words():
    model = Config.fromfile(os.path.join(REPO, "configs", "visionllm_tiny_shapes.py")).model
    assert tuple(model.question_grounding.kinds) == SHAPE_KINDS
    assert set(model.question_grounding.colours) == set(COLOURS) | set(COLOUR_NAMES)
    for reader in (model.question_counting, model.grounding_verification, model.caption_grounding):
        assert tuple(reader.categories) == SHAPE_KINDS
    for reader in (model.question_counting, model.grounding_verification):
        assert reader.colours == model.question_grounding.colours
