"""Follow-up questions made self-contained from the conversation (visionllm.models.follow_ups)."""
import pytest

from visionllm.models.follow_ups import self_contained_question


def _turns(*users):
    return [dict(user=user, assistant="yes") for user in users]


@pytest.mark.parametrize("question, history, expected", [
    ("What colour is it?", _turns("<image> Is there a triangle?"), "what colour is the triangle?"),
    ("which shape is that one?", _turns("<image> Answer the question: is there a red thing?"),
     "which shape is the red thing?"),
    ("What size is it?", _turns("<image> Is there a yellow diamond?"), "what size is the yellow diamond?"),
    ("Is it on the left or the right side of the image?", _turns("<image> do you see a blue star in the image?"),
     "is the blue star on the left or on the right?"),
    ("And how many of them are white?", _turns("<image> How many stars are there?"),
     "how many white stars are there?"),
    ("How many of them are red?", _turns("<image> Are there any circles in the image?"),
     "how many red circles are there?"),
    ("How many of them are there?", _turns("<image> Is there a hexagon?"), "how many hexagons are there?"),
    ("How many shapes are there, then?", _turns("<image> Is there a square?"), "How many shapes are there?"),
    ("What about orange ones?", _turns("<image> How many boxes are there?", "And how many of them are white?"),
     "how many orange boxes are there?"),
    # the third turn resolves through the second
    ("Is it on the left or on the right?", _turns("<image> Is there a purple star?", "What size is it?"),
     "is the purple star on the left or on the right?"),
    # nothing to refer to, or no reference: as asked
    ("What colour is it?", [], "What colour is it?"),
    ("What colour is it?", None, "What colour is it?"),
    ("What colour is it?", _turns("<image> Describe the image."), "What colour is it?"),
    ("What about orange ones?", _turns("<image> Is there a star?"), "What about orange ones?"),
    ("How many circles are there?", _turns("<image> Is there a star?"), "How many circles are there?"),
])
def test_follow_ups_become_the_questions_they_stand_for(question, history, expected):
    assert self_contained_question(question, history) == expected
