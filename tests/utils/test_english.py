"""English word forms (visionllm.utils.english)."""
from visionllm.utils.english import article, plural


def test_plurals_follow_the_spelling_rules():
    assert [plural(w) for w in ("square", "bus", "box", "sandwich", "pony", "toy", "person", "knife", "skis")] == \
        ["squares", "buses", "boxes", "sandwiches", "ponies", "toys", "people", "knives", "skis"]
    assert plural("traffic light") == "traffic lights"
    assert plural("dark red star") == "dark red stars"


def test_article_follows_the_first_letter():
    assert [article(w) for w in ("orange", "hexagon", "egg", "red", "umbrella")] == ["an", "a", "an", "a", "an"]
