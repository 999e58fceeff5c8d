"""Object mentions of captions, CHAIR and count accuracy on hand-built captions whose values follow
from the definitions (visionllm.evaluation.hallucination)."""
import pytest

from visionllm.evaluation.hallucination import COCO_SYNONYMS, ObjectVocabulary, hallucination_scores, load_image_objects

KINDS = ["circle", "square", "triangle", "star", "hexagon", "diamond"]
COLOURS = ["red", "green", "blue", "purple", "orange"]


def shapes_vocabulary():
    return ObjectVocabulary(KINDS, COLOURS)


def described(vocabulary, caption):
    return [(m.category, m.attribute, m.count) for m in vocabulary.mentions(caption)]


def test_mentions_read_kind_colour_and_numeral():
    vocabulary = shapes_vocabulary()
    assert described(vocabulary, "A red square, two blue circles and 3 big green stars.") == \
        [("square", "red", None), ("circle", "blue", 2), ("star", "green", 3)]
    # generic nouns carry counts but name no category; "a" is no stated count
    assert described(vocabulary, "three coloured shapes on a patterned background") == [(None, None, 3)]
    # a numeral belongs to its own phrase only
    assert described(vocabulary, "two circles and a triangle") == [("circle", None, 2), ("triangle", None, None)]


def test_multi_word_names_synonyms_and_attribute_words_that_are_also_categories():
    vocabulary = ObjectVocabulary(["dog", "hot dog", "person", "dining table", "orange", "square", "sports ball",
                                   "baseball bat"], attributes=["orange"], synonyms=COCO_SYNONYMS)
    assert described(vocabulary, "Two men eat hot dogs at a table near three dogs") == \
        [("person", None, 2), ("hot dog", None, None), ("dining table", None, None), ("dog", None, 3)]
    # the longest name wins: "baseball" alone is a sports ball, "baseball bat" is a bat
    assert described(vocabulary, "a baseball bat and a baseball") == [("baseball bat", None, None),
                                                                        ("sports ball", None, None)]
    # "orange" before a noun qualifies it; alone it is the fruit
    assert described(vocabulary, "an orange square and an orange") == [("square", "orange", None),
                                                                        ("orange", None, None)]


def test_chair_and_count_accuracy_from_their_definitions():
    vocabulary = shapes_vocabulary()
    image = [("square", "red"), ("triangle", "purple"), ("square", "blue")]
    captions = {
        1: "a red square and a green circle",       # 2 mentions, the circle is absent
        2: "two squares and a purple triangle",      # 2 mentions, right count (2 squares)
        3: "a blue triangle and a star",             # 2 hallucinated mentions: the triangle is purple
        4: "three coloured shapes",                  # no category mention, right count (3 objects)
        5: "a purple triangle, a purple triangle",   # 2 mentions, both right, repeated
        6: "two red squares",                        # 1 mention, present, wrong count (1 red square)
        7: "a circle",                               # not in the objects: left out
    }
    objects = {i: image for i in range(1, 7)}
    scores = hallucination_scores(captions, objects, vocabulary)
    assert scores.num_captions == 6 and scores.num_mentions == 9 and scores.num_counts == 3
    assert scores.chair_i == pytest.approx(3 / 9)   # circle (1), blue triangle and star (3)
    assert scores.chair_s == pytest.approx(2 / 6)   # captions 1 and 3, each counted once
    assert scores.count_accuracy == pytest.approx(2 / 3)  # captions 2 and 4 right, 6 wrong
    assert scores.repeat_share == pytest.approx(1 / 6)    # caption 5


def test_an_image_without_objects_makes_every_mention_a_hallucination():
    scores = hallucination_scores({1: "a star", 2: "nothing here"}, {1: [], 2: []}, shapes_vocabulary())
    assert scores.chair_i == 1.0 and scores.chair_s == 0.5 and scores.count_accuracy is None


def test_image_objects_come_from_coco_instances():
    instances = dict(
        images=[dict(id=1), dict(id=2)],
        categories=[dict(id=1, name="square"), dict(id=2, name="traffic light")],
        annotations=[dict(image_id=1, category_id=1, attributes=dict(colour="red")),
                     dict(image_id=1, category_id=2),
                     dict(image_id=1, category_id=2, iscrowd=1)])
    merged, objects = load_image_objects(instances, attribute_keys=("colour",))
    assert objects == {1: [("square", "red"), ("traffic light", None)], 2: []}
    vocabulary = ObjectVocabulary.from_coco(merged, attribute_keys=("colour",))
    assert described(vocabulary, "two traffic lights and a red square") == [("traffic light", None, 2),
                                                                              ("square", "red", None)]
    with pytest.raises(ValueError, match="category"):
        ObjectVocabulary([])
    # image 2 has no objects: its square is hallucinated, image 1's red square is not
    assert hallucination_scores({1: "a red square", 2: "a square"}, objects, vocabulary).chair_i == 0.5
