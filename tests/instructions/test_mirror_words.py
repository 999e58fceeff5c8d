"""The word swaps of a mirrored image: whole words, capitalisation kept, each its own inverse."""
import random

from visionllm.instructions.mirror_words import swap_left_right, swap_top_bottom

WORDS = ["left", "Right", "LEFTMOST", "rightmost", "above", "Below", "top", "BOTTOM", "upper", "lower", "over", "under", "topmost",
         "the", "red", "square", "topic", "cleft", "bottomless", "uppercase", "<region>", "?"]


def test_top_bottom_words_swap_as_whole_words_keeping_case():
    assert swap_top_bottom("Is <region> above the TOP one, below the upper star, Over it?") == \
        "Is <region> below the BOTTOM one, above the lower star, Under it?"
    assert swap_top_bottom("topic bottomless uppercase overlap understand") == \
        "topic bottomless uppercase overlap understand"
    assert swap_top_bottom("the leftmost star") == "the leftmost star"  # the other axis is left alone


def test_each_swap_is_its_own_inverse_and_touches_only_its_axis():
    rng = random.Random()
    for _ in range(200):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
        assert swap_left_right(swap_left_right(text)) == text
        assert swap_top_bottom(swap_top_bottom(text)) == text
        assert swap_left_right(swap_top_bottom(text)) == swap_top_bottom(swap_left_right(text))
        lowered = swap_top_bottom(text).lower().split()
        assert all(("left" in w or "right" in w) == ("left" in v or "right" in v) for w, v in zip(lowered, text.lower().split()))
