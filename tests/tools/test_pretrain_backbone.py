"""tools/pretrain_backbone_shapes.py (and the package code it runs): labels follow the pixels,
the accuracy is right, and the saved body loads into the model's backbone and carries the
trained weights."""
import json

import numpy as np
import pytest
import torch

from tools.pretrain_backbone_shapes import main
from visionllm.datasets.shape_kind_maps import IGNORE
from visionllm.datasets.shape_kind_maps import load_kind_maps as load_split
from visionllm.datasets.shape_kind_maps import random_kind_batch as random_batch
from visionllm.engine.shape_kind_pretraining import object_accuracy
from visionllm.datasets.shapes import write_shapes_dataset
from visionllm.models.image_tokenizer.backbones.resnet import ResNetBackbone


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain_shapes")
    write_shapes_dataset(str(root), num_train=6, num_val=3, seed=5, image_size=(64, 96), max_objects=3)
    return str(root)


def test_label_maps_match_the_drawn_colours(shapes_root):
    images, labels, objects, num_classes = load_split(shapes_root, "val", 96)
    assert num_classes == 7 and images.shape[1:] == (96, 96, 3) and labels.shape[1:] == (96, 96)
    # Exactly the resized image is labelled; the padding is ignored, never background.
    with open(f"{shapes_root}/annotations/instances_val.json") as handle:
        infos = sorted(json.load(handle)["images"], key=lambda info: info["id"])
    for label, info in zip(labels, infos):
        scale = 96 / max(info["width"], info["height"])
        h, w = round(info["height"] * scale), round(info["width"] * scale)
        assert (label[:h, :w] != IGNORE).all() and (label == IGNORE).sum() == 96 * 96 - h * w
    for image, image_objects in zip(images, objects):
        for category, mask in image_objects:
            assert mask.any()
            # Each shape is painted in one colour: its pixels are far less varied than the image.
            assert image[mask].std(0).max() < 0.5 * image.reshape(-1, 3).std(0).max() + 10


def test_random_batch_keeps_labels_on_their_pixels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, size=(3, 16, 16)).astype(np.uint8)
    # Images whose red channel encodes the label: after any flip/rotation they must still agree.
    images = np.repeat(labels[..., None] * 30, 3, axis=-1).astype(np.uint8)
    for _ in range(5):
        x, y = random_batch(rng, images, labels, 4)
        red = x[:, 0] * 58.395 + 123.675
        assert torch.allclose(red, y.float() * 30, atol=1e-3)


def test_object_accuracy_counts_the_peak_of_the_mean_kind_probability():
    mask_a = np.zeros((4, 4), dtype=bool)
    mask_a[:2] = True
    mask_b = ~mask_a
    probs = torch.zeros(1, 4, 4, 4)  # classes: background, 1, 2, 3
    probs[0, 0] = 0.9  # background dominates everywhere: only the kinds are compared
    probs[0, 2][torch.from_numpy(mask_a)] = 0.1
    probs[0, 1][torch.from_numpy(mask_b)] = 0.05
    probs[0, 3][torch.from_numpy(mask_b)] = 0.08
    assert object_accuracy(probs, [[(2, mask_a), (3, mask_b)]]) == 1.0
    assert object_accuracy(probs, [[(2, mask_a), (1, mask_b)]]) == 0.5
    assert object_accuracy(probs, [[(1, mask_a), (1, mask_b)]]) == 0.0


def _seeded_initial_body(seed: int) -> dict:
    """The body weights ``main`` starts from: it seeds torch, then builds the backbone first."""
    torch.manual_seed(seed)
    return ResNetBackbone(depth=18, embed_dims=128).body.state_dict()


def _parameter_names(body_state: dict) -> list:
    body = ResNetBackbone(depth=18, embed_dims=32).body
    return [name for name, _ in body.named_parameters() if name in body_state]


@pytest.mark.slow  # trains the backbone
def test_saved_body_loads_into_the_backbone_with_trained_weights(shapes_root, tmp_path):
    common = ["--data-root", shapes_root, "--iters", "2", "--batch-size", "2", "--size", "64", "--eval-interval", "2",
              "--seed", "3"]
    main(common + ["--out", str(tmp_path / "trained"), "--lr", "1e-2"])
    path = tmp_path / "trained" / "resnet_body.pth"
    fresh = ResNetBackbone(depth=18, embed_dims=32)
    missing, unexpected = fresh.load_checkpoint(str(path))
    assert missing == [] and unexpected == []
    saved = torch.load(path, weights_only=True)
    state = fresh.body.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())

    init = _seeded_initial_body(3)
    names = _parameter_names(saved)
    assert names and set(names) <= set(init)
    # The reference is the very start of training: with lr 0 (AdamW's decay is lr * wd, so 0
    # too) the saved parameters are bit-identical to it. This guards the comparison below.
    main(common + ["--out", str(tmp_path / "untrained"), "--lr", "0"])
    untrained = torch.load(tmp_path / "untrained" / "resnet_body.pth", weights_only=True)
    assert all(torch.equal(untrained[k], init[k]) for k in names)
    # Trained: every parameter tensor moved away from that same start.
    unchanged = [k for k in names if torch.equal(saved[k], init[k])]
    assert unchanged == [], f"parameters not trained: {unchanged[:5]}"
    assert (tmp_path / "trained" / "history.json").is_file()


def test_missing_data_is_a_one_line_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="make_shapes"):
        load_split(str(tmp_path), "train", 64)
    with pytest.raises(SystemExit, match="make_shapes"):
        main(["--data-root", str(tmp_path), "--out", str(tmp_path / "out")])
