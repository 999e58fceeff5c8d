"""The words of an instruction and the phrases that end at them."""
import pytest

from visionllm.instructions.words import word_phrases, word_spans


def test_word_spans_skip_placeholders_and_punctuation():
    text = "<image> Is the red square left of <region>? It's x-shaped."
    words = [text[a:b] for a, b in word_spans(text)]
    assert words == ["Is", "the", "red", "square", "left", "of", "It's", "x-shaped"]


def test_phrases_end_at_each_word_within_the_window():
    assert word_phrases("<image> Is the red square left?", window=3) == [
        "Is", "Is the", "Is the red", "the red square", "red square left"]
    assert word_phrases("a b c", window=1) == ["a", "b", "c"]
    assert word_phrases("<image>") == []
    with pytest.raises(ValueError, match="at least one word"):
        word_phrases("a b", window=0)
