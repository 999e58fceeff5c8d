"""English word forms (visionllm.utils.english)."""
from visionllm.utils.english import article, count_phrase, join, plural, singular


def test_plurals_follow_the_spelling_rules():
    assert [plural(w) for w in ("square", "bus", "box", "sandwich", "pony", "toy", "person", "knife", "skis")] == \
        ["squares", "buses", "boxes", "sandwiches", "ponies", "toys", "people", "knives", "skis"]
    assert plural("traffic light") == "traffic lights"
    assert plural("dark red star") == "dark red stars"


def test_article_follows_the_first_letter():
    assert [article(w) for w in ("orange", "hexagon", "egg", "red", "umbrella")] == ["an", "a", "an", "a", "an"]


def test_singular_undoes_plural_and_keeps_other_words():
    words = ("square", "bus", "box", "sandwich", "pony", "toy", "person", "knife", "skis", "class", "glasses")
    assert [singular(plural(w)) for w in words] == list(words)
    assert singular("dark red stars") == "dark red star"
    assert [singular(w) for w in ("star", "sheep", "red")] == ["star", "sheep", "red"]


def test_counted_phrases_and_lists():
    assert [count_phrase(n, "red box") for n in (1, 2, 12, 13)] == \
        ["a red box", "two red boxes", "twelve red boxes", "13 red boxes"]
    assert count_phrase(1, "orange star") == "an orange star"
    assert join(["a star"]) == "a star"
    assert join(iter(["a star", "two boxes"])) == "a star and two boxes"
    assert join(["a", "b", "c"]) == "a, b and c"
