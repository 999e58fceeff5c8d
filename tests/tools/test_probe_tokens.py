"""tools/probe_tokens.py: object matching, attribute labels and the linear probe."""
import json

import numpy as np
import torch


def test_probe_learns_a_linear_label_and_not_a_random_one():
    from tools.probe_tokens import probe_accuracy
    rng = np.random.default_rng(int(np.random.randint(1 << 30)))
    x = rng.standard_normal((600, 12)).astype(np.float32)
    learnable = np.array([str(int(v)) for v in np.argmax(x[:, :3] @ rng.standard_normal((3, 3)), 1)], dtype=object)
    random_labels = np.array([str(v) for v in rng.integers(0, 3, 600)], dtype=object)
    assert probe_accuracy(x[:400], list(learnable[:400]), x[400:], learnable[400:], seed=0) > 0.9
    assert probe_accuracy(x[:400], list(random_labels[:400]), x[400:], random_labels[400:], seed=0) < 0.55


def test_collect_matches_tokens_to_objects_and_reads_their_attributes(tmp_path, monkeypatch):
    """Tokens that hold their object's colour one-hot (planted at each object's centre)
    are matched to the right objects, so the probe reads the colour perfectly."""
    import tools.probe_tokens as probe
    from visionllm.datasets.shapes import COLOURS, build_split
    root = tmp_path / "shapes"
    seed = int(np.random.randint(1000))
    build_split("train", 12, seed, str(root))
    build_split("val", 6, seed + 1, str(root))
    colours = list(COLOURS)
    current = {}

    def planted_tokens(image, instruction):
        objects = current["objects"]
        tokens = torch.zeros(16, 10)
        refs = torch.rand(16, 2) * 0.02 + 2.0  # unused tokens far away
        for i, (cx, cy, colour) in enumerate(objects):
            refs[i] = torch.tensor([cx, cy])
            tokens[i, colours.index(colour)] = 3.0
            tokens[i, 7:] = torch.randn(3)
        return dict(embeds=tokens, llm_embeds=tokens * 2, reference_points=refs)

    originals = {}
    for split in ("train", "val"):
        coco = json.load(open(root / "annotations" / f"instances_{split}.json"))
        for info in coco["images"]:
            originals[(split, info["file_name"])] = [
                ((a["bbox"][0] + a["bbox"][2] / 2) / info["width"], (a["bbox"][1] + a["bbox"][3] / 2) / info["height"],
                 a["attributes"]["colour"]) for a in coco["annotations"] if a["image_id"] == info["id"]]
    from PIL import Image
    real_open = Image.open

    def tracking_open(path, *args, **kwargs):
        parts = str(path).split("/")
        current["objects"] = originals[(parts[-2], parts[-1])]
        return real_open(path, *args, **kwargs)

    class PlantedInferencer:
        image_tokens = staticmethod(planted_tokens)

    monkeypatch.setattr(Image, "open", tracking_open)
    train_feats, train_labels = probe.collect(PlantedInferencer(), str(root), "train", 12, "unused")
    val_feats, val_labels = probe.collect(PlantedInferencer(), str(root), "val", 6, "unused")
    assert len(train_labels) == sum(len(v) for (s, _), v in originals.items() if s == "train")
    assert {"category", "colour", "size"} <= set(train_labels[0])
    expected = [colours.index(lab["colour"]) for lab in train_labels]
    assert train_feats["embeds"][:, :7].argmax(1).tolist() == expected
    val_y = np.array([lab["colour"] for lab in val_labels], dtype=object)
    assert probe.probe_accuracy(train_feats["embeds"], [lab["colour"] for lab in train_labels],
                                val_feats["embeds"], val_y, seed=0) > 0.9


def test_only_named_attributes_become_probe_classes():
    from tools.probe_tokens import object_labels
    annotation = dict(category_id=3, attributes=dict(colour="red", size="small", rgb=[200, 30, 41], radius=0.12))
    assert object_labels(annotation) == dict(category="3", colour="red", size="small")
    assert object_labels(dict(category_id=1)) == dict(category="1")
