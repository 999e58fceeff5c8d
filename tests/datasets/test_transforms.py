"""Pipeline transforms: flip / resize consistency, polygon resampling, instructions, packing."""
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from shapely.geometry import MultiPoint, Polygon

import visionllm.datasets  # noqa: F401
from visionllm.datasets.shapes import SHAPE_KINDS, build_split, shape_outline
from visionllm.datasets.transforms import (PackVisionLLMInputs, RandomFlipWithText, ResamplePolygons,
                                           ResizeKeepRatio, resample_polygon, swap_left_right)
from visionllm.registry import DATASETS


@pytest.fixture(autouse=True)
def _visionllm_scope():
    # configs set default_scope='visionllm'; pipelines built outside a Runner need it too
    from mmengine.registry import init_default_scope
    init_default_scope("visionllm")


def _raster(points, h, w):
    return mask_utils.decode(mask_utils.frPyObjects([np.asarray(points, np.float64).reshape(-1).tolist()], h, w))[..., 0]


def _random_scene(h=48, w=64):
    rng = np.random.default_rng()
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    x1, y1 = rng.uniform(2, 20, 2)
    box = np.asarray([[x1, y1, x1 + rng.uniform(8, 30), y1 + rng.uniform(8, 20)]], dtype=np.float32)
    tri = np.asarray([[x1, y1], [x1 + 20, y1 + 3], [x1 + 5, y1 + 20]], dtype=np.float32)
    return dict(img=img, gt_bboxes=box, gt_labels=np.asarray([0]), gt_polygons=[[tri]], ori_shape=(h, w),
                img_shape=(h, w), expression="the dog on the left of the leftmost cat",
                question="Is the cup on the Right?", target_text="right", gt_texts=["left", "LEFT side", "cleft"])


def test_swap_left_right_whole_words_and_case():
    assert swap_left_right("Left of the rightmost cup, LEFT") == "Right of the leftmost cup, RIGHT"
    assert swap_left_right("cleft leftover") == "cleft leftover"


def test_flip_keeps_boxes_polygons_and_text_consistent():
    results = _random_scene()
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in results.items()}
    flipped = RandomFlipWithText(prob=1.0).transform(dict(results, gt_polygons=[[p.copy() for p in results["gt_polygons"][0]]]))
    h, w = before["img"].shape[:2]
    assert np.array_equal(flipped["img"], before["img"][:, ::-1])
    # The mirrored box covers the mirrored pixels.
    x1, y1, x2, y2 = flipped["gt_bboxes"][0]
    ox1, oy1, ox2, oy2 = before["gt_bboxes"][0]
    assert np.allclose([x1, x2], [w - ox2, w - ox1]) and np.allclose([y1, y2], [oy1, oy2])
    assert x1 < x2
    # The polygon's mask is the mirrored mask (same pixel grid, up to rasterisation at edges).
    m0 = _raster(before["gt_polygons"][0][0], h, w)
    m1 = _raster(flipped["gt_polygons"][0][0], h, w)
    assert (m0[:, ::-1] != m1).sum() <= 0.1 * m0.sum()
    assert flipped["expression"] == "the dog on the right of the rightmost cat"
    assert flipped["question"] == "Is the cup on the Left?" and flipped["target_text"] == "left"
    assert flipped["gt_texts"] == ["right", "RIGHT side", "cleft"] and flipped["flip"] is True
    back = RandomFlipWithText(prob=1.0).transform(flipped)
    assert np.array_equal(back["img"], before["img"]) and np.allclose(back["gt_bboxes"], before["gt_bboxes"])
    assert back["expression"] == before["expression"] and back["flip"] is False
    assert np.allclose(back["gt_polygons"][0][0], before["gt_polygons"][0][0])


def test_flip_probability_zero_is_identity():
    results = _random_scene()
    out = RandomFlipWithText(prob=0.0).transform(dict(results))
    assert out["expression"] == results["expression"] and out["flip"] is False


def test_resize_keeps_ratio_and_scales_targets():
    results = _random_scene(h=48, w=64)
    colour = np.asarray([250, 10, 10], np.uint8)
    x1, y1, x2, y2 = results["gt_bboxes"][0].round().astype(int)
    results["img"][y1:y2, x1:x2] = colour
    results["gt_bboxes"] = np.asarray([[x1, y1, x2, y2]], np.float32)
    out = ResizeKeepRatio(scale=(128, 96)).transform(results)
    assert out["img_shape"] == (96, 128) and out["img"].shape[:2] == (96, 128)
    assert np.allclose(out["scale_factor"], (2.0, 2.0))
    bx1, by1, bx2, by2 = out["gt_bboxes"][0]
    inner = out["img"][int(by1) + 2:int(by2) - 2, int(bx1) + 2:int(bx2) - 2].reshape(-1, 3)
    assert np.abs(inner.astype(int) - colour).max() <= 2
    padded = ResizeKeepRatio(scale=(80, 80), pad_to=(80, 80)).transform(_random_scene(h=48, w=64))
    assert padded["img_shape"] == (60, 80) and padded["pad_shape"] == (80, 80)


def _iou(a, b):
    a, b = Polygon(a), Polygon(b)
    return a.intersection(b).area / a.union(b).area


def _random_polygons(rng):
    """Simple (valid) polygons: star-shaped blobs with random radii, convex hulls of random
    points, and the shapes kinds. The datasets drop self-intersecting polygons before any
    transform (``polygon_problem``), so resampling is only ever given simple ones."""
    for _ in range(10):
        n = int(rng.integers(5, 40))
        # Vertices in angular order around the centre with every angular gap below pi: each
        # edge stays inside its own sector, so the polygon is simple (uniform random angles
        # leave a gap above pi for small n about 1.4 % of the time: a self-intersecting blob).
        gaps = rng.uniform(0.5, 1.0, n)
        angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.cumsum(gaps) / gaps.sum()
        radii = rng.uniform(10, 30) * (1 + 0.25 * rng.uniform(-1, 1, n))
        yield np.stack([50 + radii * np.cos(angles), 50 + radii * np.sin(angles)], 1)
        hull = MultiPoint(rng.uniform(0, 100, (12, 2))).convex_hull
        yield np.asarray(hull.exterior.coords)[:-1]
    for kind in SHAPE_KINDS:
        yield np.asarray(shape_outline(kind, 60, 40, rng.uniform(10, 40), rng.uniform(0, 6.3)).exterior.coords)


def test_random_polygons_of_the_tests_are_simple():
    for seed in range(300):
        for points in _random_polygons(np.random.default_rng(seed)):
            assert Polygon(points).is_valid, seed


def test_resampled_polygon_keeps_shape_and_start_rule():
    rng = np.random.default_rng()
    for points in _random_polygons(rng):
        out = resample_polygon(points, 24)
        assert out.shape == (24, 2)
        # 24 points cannot follow every notch of a jagged 40-vertex blob: IoU just under 0.9 occurs
        assert _iou(points, out) > 0.85
        poly = Polygon(points)
        cx, cy = poly.centroid.x, poly.centroid.y
        # start: on the ray at angle 0 from the centre
        assert abs(out[0, 1] - cy) < 1e-3 and out[0, 0] > cx
        # counter-clockwise on screen (y down): negative shoelace area in pixel coordinates
        x, y = out[:, 0], out[:, 1]
        assert np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y) < 0
        # the rule does not depend on where the source ring starts or how it is oriented
        ring = points[:-1] if np.allclose(points[0], points[-1]) else points
        shifted = np.roll(ring, int(rng.integers(1, len(ring))), axis=0)[::-1]
        assert np.allclose(resample_polygon(shifted, 24), out, atol=1e-3)


def test_resample_transform_picks_k_and_largest_part():
    big = np.asarray([[0, 0], [30, 0], [30, 30], [0, 30]], np.float32)
    small = np.asarray([[40, 40], [44, 40], [44, 44]], np.float32)
    results = dict(task="segmentation", gt_polygons=[[small, big], []],
                   gt_bboxes=np.asarray([[0, 0, 44, 44], [50, 50, 60, 70]], np.float32))
    out = ResamplePolygons(num_points=[8, 12]).transform(results)
    k = out["num_points"]
    assert k in (8, 12) and out["gt_polygons"].shape == (2, k, 2)
    assert _iou(big, out["gt_polygons"][0]) > 0.9  # the big part was kept
    assert np.allclose(Polygon(out["gt_polygons"][1]).bounds, (50, 50, 60, 70))


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes_tf")
    build_split("val", 6, int(np.random.randint(1000)), str(root))
    return root


def _pipeline(train):
    steps = [dict(type="LoadImageRGB"), dict(type="LoadVisionLLMAnnotations")]
    if train:
        steps.append(dict(type="RandomFlipWithText", prob=0.5))
    steps += [dict(type="ResizeKeepRatio", scale=(256, 224)), dict(type="ResamplePolygons", num_points=[8, 16, 24]),
              dict(type="BuildInstruction", max_categories=4, sample_categories=train,
                   template_index=None if train else 0),
              dict(type="PackVisionLLMInputs")]
    return steps


@pytest.mark.parametrize("train", [True, False])
def test_pipeline_packs_contract_samples_for_every_task(shapes_root, train):
    ann = shapes_root / "annotations"
    prefix = dict(img_path=str(shapes_root / "images" / "val"))
    cfgs = dict(
        detection=dict(type="CocoInstancesDataset", ann_file=str(ann / "instances_val.json"), task="detection"),
        segmentation=dict(type="CocoInstancesDataset", ann_file=str(ann / "instances_val.json"), task="segmentation"),
        grounding=dict(type="RefCocoDataset", ann_file=str(ann / "instances_val.json"),
                       refs_file=str(ann / "refs_val.json")),
        caption=dict(type="CocoCaptionDataset", ann_file=str(ann / "captions_val.json"),
                     boxes_file=str(ann / "instances_val.json")),
        vqa=dict(type="VQAv2Dataset", ann_file=str(ann / "vqa_questions_val.json"),
                 answers_file=str(ann / "vqa_annotations_val.json"), image_info_file=str(ann / "instances_val.json"),
                 boxes_file=str(ann / "instances_val.json")))
    for task, cfg in cfgs.items():
        dataset = DATASETS.build(dict(cfg, data_prefix=prefix, pipeline=_pipeline(train), test_mode=not train))
        for idx in range(min(3, len(dataset))):
            info = dataset.get_data_info(idx)
            packed = dataset[idx]
            inputs, sample = packed["inputs"], packed["data_samples"]
            assert inputs.dtype == torch.uint8 and inputs.shape[0] == 3
            assert tuple(inputs.shape[1:]) == sample.img_shape
            assert sample.task == task and sample.instruction.count("<image>") == 1
            h, w = sample.ori_shape
            assert (h, w) == (info.get("height", h), info.get("width", w))
            sx, sy = sample.scale_factor
            assert abs(sx * w - sample.img_shape[1]) <= 1 and abs(sy * h - sample.img_shape[0]) <= 1
            gt = sample.gt_instances
            assert gt.bboxes.dtype == torch.float32 and gt.labels.dtype == torch.int64
            if task in ("detection", "segmentation"):
                names = dataset.metainfo["classes"]
                if not train:
                    assert sample.categories == list(names)
                assert len(sample.categories) == len(sample.category_ids)
                assert [names[i] for i in sample.category_ids] == sample.categories
                assert sample.output_format[0] == "cls"
                # every target label names a category of the instruction, and the objects kept
                # are exactly those whose class is in the set
                kept = [i for i in info["instances"] if names[i["bbox_label"]] in sample.categories]
                assert len(gt) == len(kept)
                for label, inst in zip(gt.labels.tolist(), kept):
                    assert sample.categories[label] == names[inst["bbox_label"]]
                if not sample.flip:
                    expected = np.asarray([i["bbox"] for i in kept]).reshape(-1, 4) * [sx, sy, sx, sy]
                    assert np.allclose(gt.bboxes.numpy(), expected, atol=1e-3)
                if task == "segmentation":
                    k = gt.polygons.shape[1]
                    assert sample.output_format == ("cls",) + tuple(f for i in range(1, k + 1) for f in (f"x{i}", f"y{i}"))
                    assert gt.polygons.shape == (len(gt), k, 2)
                    # The box is the pixel mask's extent; the resampled polygon keeps the exact
                    # vertices, whose thin tips (stars) may pass the last covered pixel centre.
                    inside = (gt.polygons[..., 0] >= gt.bboxes[:, None, 0] - 3) & (gt.polygons[..., 0] <= gt.bboxes[:, None, 2] + 3)
                    assert bool(inside.all())
                else:
                    assert "polygons" not in gt
            elif task == "grounding":
                assert sample.categories == [sample.expression] and gt.labels.tolist() == [0]
                assert sample.output_format == ("cls", "x1", "y1", "x2", "y2")
                expression = info["expression"]
                assert sample.expression == (swap_left_right(expression) if sample.flip else expression)
            else:
                # text tasks keep their image's boxes (tokenizer targets), unnamed, moved with the image
                kept = [i["bbox"] for i in info["instances"] if not i["ignore_flag"]]
                expected = np.asarray(kept).reshape(-1, 4) * [sx, sy, sx, sy]
                if sample.flip:
                    expected[:, [0, 2]] = sample.img_shape[1] - expected[:, [2, 0]]
                assert len(kept) > 0 and gt.labels.tolist() == [-1] * len(kept)
                assert np.allclose(gt.bboxes.numpy(), expected, atol=1e-3)
            if task == "caption":
                assert sample.target_text in sample.gt_texts and sample.output_format is None
            elif task == "vqa":
                assert sample.question_id == info["question_id"] and sample.target_text in sample.gt_texts
                assert info["question"] in sample.instruction or sample.flip


def test_eval_instruction_is_deterministic(shapes_root):
    ann = shapes_root / "annotations"
    cfg = dict(type="RefCocoDataset", ann_file=str(ann / "instances_val.json"), refs_file=str(ann / "refs_val.json"),
               data_prefix=dict(img_path=str(shapes_root / "images" / "val")), pipeline=_pipeline(False), test_mode=True)
    dataset = DATASETS.build(cfg)
    assert dataset[0]["data_samples"].instruction == dataset[0]["data_samples"].instruction
