"""Output-format parser, category sets and their sampling."""
import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visionllm.instructions import (MAX_POINTS, OutputFormat, UnsupportedOutputFormat, format_category_set,
                                    parse_output_format, read_category_set, sample_category_set,
                                    split_category_set)
from visionllm.tasks import build_instruction

WORDS = ["cat", "dog", "traffic light", "person", "bowl", "red cube", "blue circle", "zebra",
         "hot dog", "teddy bear", "cell phone", "kite", "fire hydrant", "oven"]

def test_format_category_set():
    assert format_category_set(["cat", "dog"]) == '{"cat": <c0>, "dog": <c1>}'
    names = random.Random(3).sample(WORDS, 10) + ['say "hi"']
    text = format_category_set(names)
    # JSON-readable once the class tokens are quoted: names and token order survive.
    parsed = json.loads(re.sub(r"<c(\d+)>", r'"<c\1>"', text))
    assert list(parsed) == names and list(parsed.values()) == [f"<c{i}>" for i in range(len(names))]


@pytest.mark.parametrize("text,num_points", [
    ("give boxes as (c, x1, y1, x2, y2)", 2),
    ("format: (c,x1,y1,x2,y2)", 2),
    ("polygon with 8 points (c, x1, y1, ..., x8, y8)", 8),
    ("(class, x1, y1, x2, y2)", 2),
    ("Detect cats. Output (category, x1, y1, x2, y2) per object.", 2),
    ("boxes please: (x1, y1, x2, y2)", 2),
    ("answer as [label, x1, y1, x2, y2]", 2),
    ("polygon (c, x1, y1, x2, y2, x3, y3, x4, y4)", 4),
    ("outline as (cls, x_1, y_1, …, x_20, y_20)", 20),
    ("contour (c, x1, y1, x2, y2, ..., x14, y14)", 14),
    ("use 24 vertices: (c, x1, y1, ..., x24, y24)", 24),
    ("<cls> <x1> <y1> <x2> <y2> <x3> <y3>", 3),
    ('Find "a (very) big dog" and give (c, x1, y1, x2, y2).', 2),
    ('Segment {"shape (x, y)": <c0>} in <image> as (c, x1, y1, ..., x16, y16).', 16),
    ('format: "(c, x1, y1, x2, y2)"', 2),
])
def test_parser_on_hand_written_phrasings(text, num_points):
    fmt = parse_output_format(text)
    assert fmt.num_points == num_points
    assert fmt.kind == ("box" if num_points == 2 else "polygon")
    assert fmt.fields[0] == "cls"
    assert fmt.coordinate_fields == tuple(f"{a}{i}" for i in range(1, num_points + 1) for a in "xy")


@pytest.mark.parametrize("text,mentions", [
    ("polygon (c, x1, y1, ..., x30, y30)", "30"),
    ("give (x, y, w, h) for each", "w"),
    ("give (c, cx, cy, w, h)", "cx"),
    ("answer (c, x1, y1)", "x1"),
    ("(c, x1, y1, x3, y3)", "x3"),
    ("(c, x1, y1, ..., x8)", "x8"),
    ("(c, x1, y1, ...)", "ellipsis"),
    ("(c, x1, y1, z1)", "z1"),
    ("(c, x1, y1, x2, y2, label)", "class more than once"),
    ("(c, ..., x8, y8)", "before its ellipsis"),
    ("(c, x1, y1, ..., x4, y4, ..., x8, y8)", "more than one ellipsis"),
    ("(c, y1, x1, y2, x2)", "in order"),
    ("polygon with 8 points (c, x1, y1, ..., x16, y16)", "8"),
    ("Write a caption for the image.", "no output format"),
])
def test_parser_rejects_unsupported(text, mentions):
    with pytest.raises(UnsupportedOutputFormat) as info:
        parse_output_format(text)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message and mentions in message


def test_output_format_properties():
    for k in range(2, MAX_POINTS + 1):
        fmt = OutputFormat(("cls",) + tuple(f"{a}{i}" for i in range(1, k + 1) for a in "xy"))
        assert fmt.num_points == k and len(fmt.coordinate_fields) == 2 * k
        assert parse_output_format(fmt.to_text()) == fmt
    with pytest.raises(ValueError):
        OutputFormat(("x1", "y1", "x2", "y2"))
    with pytest.raises(UnsupportedOutputFormat):
        OutputFormat.polygon(MAX_POINTS + 1)


# -- category sets ----------------------------------------------------------------------------

def test_positives_kept_within_budget_and_negatives_disjoint():
    rng = random.Random(11)
    all_names = [f"class{i}" for i in range(80)]
    for _ in range(200):
        positives = rng.sample(all_names, rng.randint(0, 10))
        budget = rng.randint(max(1, len(positives)), 40)
        ratio = rng.choice([0.0, 0.5, 1.0, 3.0])
        chosen = sample_category_set(positives, all_names, rng, max_categories=budget, negative_ratio=ratio)
        assert len(chosen) == len(set(chosen)) <= budget
        assert set(positives) <= set(chosen)
        negatives = set(chosen) - set(positives)
        assert negatives <= set(all_names) and not negatives & set(positives)
        if ratio == 0:
            assert not negatives
        else:
            expected = max(1, int(ratio * len(positives) + 0.5))
            assert len(negatives) == min(expected, budget - len(positives))


def test_positives_subsampled_when_over_budget():
    rng = random.Random(5)
    positives = [f"p{i}" for i in range(30)]
    all_names = positives + [f"n{i}" for i in range(30)]
    kept_sets = set()
    for _ in range(20):
        chosen = sample_category_set(positives, all_names, rng, max_categories=10, negative_ratio=1.0)
        assert len(chosen) == 10 and set(chosen) <= set(positives)  # no room left for negatives
        kept_sets.add(frozenset(chosen))
    assert len(kept_sets) > 1


def test_shuffle_changes_order_and_rng_determinism():
    positives = ["a", "b", "c", "d", "e"]
    all_names = positives + ["f", "g", "h", "i", "j"]
    rng = random.Random(2)
    orders = {tuple(sample_category_set(positives, all_names, rng, 512, 0.0)) for _ in range(100)}
    assert len(orders) > 20
    first = [sample_category_set(positives, all_names, random.Random(9), 512, 1.0) for _ in range(3)]
    assert first[0] == first[1] == first[2]


def test_split_category_set():
    names = [f"n{i}" for i in range(1203)]
    chunks = split_category_set(names, 512)
    assert [len(c) for c in chunks] == [512, 512, 179]
    assert sum(chunks, []) == names
    assert split_category_set(names[:7], 512) == [names[:7]]


# -- property-based: any spelling of a supported format parses to the same fields --------------

fast = settings(max_examples=80, deadline=None)


@st.composite
def spelled_format(draw, max_points=MAX_POINTS):
    """A random hand-written spelling of (c, x1, y1, ..., xK, yK) and its K."""
    k = draw(st.integers(2, max_points))
    coord = draw(st.sampled_from(["{a}{i}", "{a}_{i}", "{A}{i}"]))
    names = [coord.format(a=a, A=a.upper(), i=i) for i in range(1, k + 1) for a in "xy"]
    if k >= 3 and draw(st.booleans()):  # elide a middle run of whole points
        head = draw(st.integers(1, k - 1))
        tail = draw(st.integers(1, k - head))
        names = names[:2 * head] + [draw(st.sampled_from(["...", "…"]))] + names[2 * (k - tail):]
    cls = draw(st.sampled_from(["c", "cls", "class", "Category", "label", None]))
    items = ([cls] if cls else []) + names
    sep = draw(st.sampled_from([", ", ",", " , ", " "]))
    left, right = draw(st.sampled_from([("(", ")"), ("[", "]")]))
    prefix = draw(st.sampled_from(["", "Answer as ", "Detect the objects in <image>; output ",
                                   'Find "the (left) dog" and give ', "format: "]))
    suffix = draw(st.sampled_from(["", ".", " for each object.", " please"]))
    return prefix + left + sep.join(items) + right + suffix, k


@fast
@given(spelled_format())
def test_parser_property_supported_spellings(case):
    text, k = case
    fmt = parse_output_format(text)
    assert fmt.num_points == k
    assert fmt == (OutputFormat.box() if k == 2 else OutputFormat.polygon(k))


@fast
@given(st.integers(MAX_POINTS + 1, 64), st.booleans())
def test_parser_property_too_many_points(k, elide):
    names = [f"{a}{i}" for i in range(1, k + 1) for a in "xy"]
    if elide:
        names = names[:2] + ["..."] + names[-2:]
    with pytest.raises(UnsupportedOutputFormat, match=str(k)):
        parse_output_format("(c, " + ", ".join(names) + ")")


@fast
@given(st.lists(st.text(min_size=1, max_size=12).filter(lambda s: "<image>" not in s),
                min_size=1, max_size=8, unique=True))
def test_category_set_round_trip(names):
    text = f"Detect {format_category_set(names)} in <image> as (c, x1, y1, x2, y2)."
    assert read_category_set(text) == names
    assert parse_output_format(text) == OutputFormat.box()


def test_parser_takes_the_last_format_by_position():
    assert parse_output_format("<cls> <x1> <y1> <x2> <y2> then (c, x1, y1, ..., x8, y8)").num_points == 8
    assert parse_output_format("(c, x1, y1, ..., x8, y8) or rather <cls> <x1> <y1> <x2> <y2>").num_points == 2
    # Other counted things in the prose do not clash with the stated polygon size.
    text = "The 4 corners of the table do not matter; polygon with 8 points (c, x1, y1, ..., x8, y8)"
    assert parse_output_format(text).num_points == 8


def test_metainfo_matches_data_sample_contract():
    ins = build_instruction("segmentation", random.Random(0), categories=["cat", "dog"], num_points=14)
    meta = ins.metainfo()
    assert meta == dict(task="segmentation", instruction=ins.text, categories=["cat", "dog"],
                        output_format=OutputFormat.polygon(14).fields)
    assert build_instruction("caption", random.Random(0)).metainfo()["output_format"] is None
