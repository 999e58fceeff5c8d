"""The samples a config's dataloader feeds the model, as plain records (``tools/browse_dataset.py``).

A record is what one packed sample holds after the pipeline: task, instruction, target text,
categories, history, regions, the ground-truth boxes, labels and polygons (rounded to 0.01
pixel) and the md5 of the image tensor. Two configs, or two commits of one config, that feed the
same training stream give the same records, so :func:`fingerprint` of the records is a cheap check
that a recipe is reproduced without training it.
"""
import hashlib
import json
from collections import Counter
from typing import Dict, Iterator, List, Optional

import torch

SPLITS = ("train", "val", "test")
_RECORD_META = ("task", "instruction", "target_text", "categories", "output_format", "history", "regions",
                "img_path")


def _rounded(values: torch.Tensor) -> list:
    return [round(float(v), 2) for v in values.flatten().tolist()]


def sample_record(inputs: torch.Tensor, data_sample) -> dict:
    """One packed sample (``inputs`` uint8 ``[3, H, W]``, its ``DetDataSample``) as a JSON-able dict."""
    meta = data_sample.metainfo
    record = {key: meta.get(key) for key in _RECORD_META}
    record["regions"] = None if record["regions"] is None else _rounded(torch.as_tensor(record["regions"]))
    gt = data_sample.gt_instances if "gt_instances" in data_sample else None
    record["boxes"] = _rounded(gt.bboxes) if gt is not None and "bboxes" in gt else []
    record["labels"] = gt.labels.tolist() if gt is not None and "labels" in gt else []
    record["polygons"] = _rounded(gt.polygons) if gt is not None and "polygons" in gt else []
    record["image_shape"] = list(inputs.shape)
    record["image_md5"] = hashlib.md5(inputs.contiguous().numpy().tobytes()).hexdigest()
    return record


def iter_samples(cfg, split: str = "train", num: Optional[int] = None) -> Iterator[tuple]:
    """``(inputs, data_sample)`` pairs from the config's ``{split}_dataloader`` in the order it
    yields them, after seeding the sampler and the random generators with the config's seed
    (``randomness.seed``, 0 when unset) as the runner does; a ``MultiTaskDataset`` makes each
    sample a function of (seed, epoch, index), so a training run draws the same stream. ``num``
    stops after that many samples (a train loader is infinite)."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmengine.runner.utils import set_random_seed

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    loader_cfg = cfg.get(f"{split}_dataloader")
    if not loader_cfg:
        raise ValueError(f"the config has no {split}_dataloader")
    if split == "train" and num is None:
        raise ValueError("a training dataloader never ends: give the number of samples")
    init_default_scope(cfg.get("default_scope", "visionllm"))
    seed = cfg.get("randomness", {}).get("seed")
    seed = 0 if seed is None else seed
    set_random_seed(seed)
    loader = Runner.build_dataloader(loader_cfg.to_dict() if hasattr(loader_cfg, "to_dict") else loader_cfg,
                                     seed=seed)
    count = 0
    for batch in loader:
        for inputs, data_sample in zip(batch["inputs"], batch["data_samples"]):
            yield inputs, data_sample
            count += 1
            if num is not None and count >= num:
                return


def fingerprint(records: List[dict]) -> str:
    """md5 of the records in order (the same for the same stream of samples)."""
    digest = hashlib.md5()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True).encode())
    return digest.hexdigest()


def count_by_task(records: List[dict]) -> Dict[str, int]:
    """Samples per task, in the order the tasks first appear."""
    return dict(Counter(record["task"] for record in records))
