"""Checks of a config's inputs before a long run: which files its datasets, evaluators and
pretrained parts need, which are missing, and what the readers make of the annotations.

``missing_inputs(cfg)`` only looks at paths (fast; tools/train.py and tools/test.py run it before
building anything). ``check_datasets(cfg)`` also reads every annotation file through the readers
and reports samples per split and task and the bad annotations they skip (tools/check_data.py).
"""
import copy
import os
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

from .base import join_root

# Where each reader's files come from (docs/datasets.md has one section per dataset).
FIX_HINTS = {
    "CocoInstancesDataset": "get COCO 2017 images + instances annotations (docs/datasets.md#coco)",
    "RefCocoDataset": "get RefCOCO (unc) instances.json + refs(unc).p and COCO train2014 images "
                      "(docs/datasets.md#refcoco)",
    "CocoCaptionDataset": "get the Karpathy split dataset_coco.json and COCO 2014 images "
                          "(docs/datasets.md#coco-caption-karpathy-split)",
    "VQAv2Dataset": "get the VQAv2 questions + annotations and COCO 2014 images (docs/datasets.md#vqav2)",
    "LlavaInstructDataset": "get llava_instruct_150k.json and COCO train2017 images (docs/datasets.md#llava-instruct)",
}
# Reasons the readers give for a sample they cannot use because a file is absent.
MISSING_REASONS = ("missing image file",)
SPLITS = ("train", "val", "test")


@dataclass
class Problem:
    """One line of a report: ``kind`` is ``'missing'`` (the run cannot start or loses data) or
    ``'bad'`` (annotations the readers skip)."""

    kind: str
    text: str
    path: Optional[str] = None  # the missing file or folder, when there is one

    def __str__(self) -> str:
        return f"{self.kind.upper()}: {self.text}"


@dataclass
class DatasetReport:
    split: str
    type: str
    task: Optional[str]
    ann_file: str
    samples: int = 0
    images: int = 0
    bad: int = 0
    problems: List[Problem] = field(default_factory=list)


def leaf_datasets(dataset_cfg) -> Iterator[dict]:
    """The reader configs inside a (possibly nested) dataset config: ``MultiTaskDataset`` /
    ``ConcatDataset`` (``datasets=[...]``) and wrappers (``dataset=...``) are walked through."""
    if dataset_cfg is None:
        return
    if isinstance(dataset_cfg, (list, tuple)):
        for item in dataset_cfg:
            yield from leaf_datasets(item)
    elif "datasets" in dataset_cfg:
        yield from leaf_datasets(dataset_cfg["datasets"])
    elif "dataset" in dataset_cfg:
        yield from leaf_datasets(dataset_cfg["dataset"])
    else:
        yield dataset_cfg


def split_datasets(cfg) -> List[Tuple[str, List[dict]]]:
    """``[(split, reader configs)]`` for the train / val / test loaders the config has; a test
    loader identical to the val loader is named ``'val+test'`` and checked once."""
    result = []
    for split in SPLITS:
        loader = cfg.get(f"{split}_dataloader")
        if not loader or not loader.get("dataset"):
            continue
        leaves = [_plain(d) for d in leaf_datasets(loader["dataset"])]
        if split == "test" and result and result[-1][0] == "val" and leaves == result[-1][1]:
            result[-1] = ("val+test", leaves)
            continue
        result.append((split, leaves))
    return result


def _plain(value):
    return value.to_dict() if hasattr(value, "to_dict") else copy.deepcopy(dict(value))


def required_files(dataset_cfg: dict) -> List[Tuple[str, str, bool]]:
    """``(path, role, is_directory)`` of every file / folder a reader config needs, resolved
    against its ``data_root`` the way the readers resolve them."""
    root = dataset_cfg.get("data_root")
    files = []

    def add(key, role, directory=False):
        value = dataset_cfg.get(key)
        if not value:
            return
        for path in [value] if isinstance(value, str) else list(value):
            files.append((join_root(root, path), role, directory))

    add("ann_file", "annotation file")
    for key, role in (("refs_file", "refs file"), ("answers_file", "answers file"),
                      ("image_info_file", "image info file"), ("boxes_file", "boxes file")):
        add(key, role)
    prefix = (dataset_cfg.get("data_prefix") or {})
    folder = prefix.get("img_path", prefix.get("img"))
    if folder is not None:
        files.append((join_root(root, folder) or ".", "image folder", True))
    return files


def evaluator_files(cfg) -> List[Tuple[str, str]]:
    """``(path, where)`` of the annotation files the val / test metrics read."""
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "ann_file" and isinstance(value, str) and value:
                    found.append((value, where))
                else:
                    walk(value, f"{where}.{key}")
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    for key in ("val_evaluator", "test_evaluator"):
        evaluator = cfg.get(key)
        walk(_plain(evaluator) if isinstance(evaluator, dict) else evaluator, key)
    return found


def pretrained_files(cfg) -> List[Tuple[str, str, bool, str]]:
    """``(path, config key, is_directory, fix)`` of the local pretrained inputs of the model:
    the LLM directory, the text encoder directory, backbone checkpoints, and ``load_from``."""
    found = []

    def walk(node, where):
        if not isinstance(node, dict):
            if isinstance(node, (list, tuple)):
                for i, value in enumerate(node):
                    walk(value, f"{where}[{i}]")
            return
        for key, value in node.items():
            here = f"{where}.{key}"
            if key == "llm" and isinstance(value, dict):
                source = value.get("source", "smollm2")
                if source not in ("smollm2", "meta"):
                    found.append((source, here + ".source", True,
                                  "put the Hugging Face LLaMA directory (config.json, weights, tokenizer) there "
                                  "or point the config at it"))
                if value.get("tokenizer_path"):
                    found.append((value["tokenizer_path"], here + ".tokenizer_path", True,
                                  "put the tokenizer directory there"))
            elif key == "model_dir" and isinstance(value, str) and value:
                found.append((value, here, True, "put the Hugging Face BERT directory (config.json, weights, "
                                                 "vocab.txt) there or set model_dir=None for the embedded MiniLM"))
            elif key == "checkpoint" and isinstance(value, str) and value:
                found.append((value, here, False, "put the pretrained backbone weights there or set it to None"))
            else:
                walk(value, here)

    walk(_plain(cfg.model) if cfg.get("model") else {}, "model")
    if cfg.get("load_from"):
        found.append((cfg.load_from, "load_from", False,
                      "train the previous stage first, or pass --cfg-options load_from=None"))
    return found


def missing_inputs(cfg, data: bool = True, pretrained: bool = True) -> List[Problem]:
    """One ``Problem`` per missing file or folder the config needs (each named once, with the
    config part that needs it and how to get it). Reads no file contents."""
    problems, seen = [], set()

    def report(path, text):
        if path not in seen:
            seen.add(path)
            problems.append(Problem("missing", text, path))

    if data:
        for split, leaves in split_datasets(cfg):
            for leaf in leaves:
                kind = leaf.get("type", "?")
                for path, role, directory in required_files(leaf):
                    exists = os.path.isdir(path) if directory else os.path.isfile(path)
                    if not exists:
                        report(path, f"{path} ({role} of {kind}, {split}): {FIX_HINTS.get(kind, 'see docs/datasets.md')}")
        for path, where in evaluator_files(cfg):
            if not os.path.isfile(path):
                report(path, f"{path} (annotation file of {where}): see docs/datasets.md")
    if pretrained:
        for path, where, directory, fix in pretrained_files(cfg):
            exists = os.path.isdir(path) if directory else os.path.isfile(path)
            if not exists:
                report(path, f"{path} ({where}): {fix}")
    return problems


def exit_if_inputs_missing(cfg) -> None:
    """Stop with one line per missing data file / pretrained directory (and how to get it)
    before a runner creates its work dir or builds anything (tools/train.py, tools/test.py)."""
    problems = missing_inputs(cfg)
    if problems:
        raise SystemExit("\n".join(f"error: missing {p.text}" for p in problems)
                         + "\n(tools/check_data.py CONFIG checks the whole data tree)")


def check_datasets(cfg) -> Tuple[List[DatasetReport], List[Problem]]:
    """Read every dataset of the config through its reader (no images are decoded).

    Returns one ``DatasetReport`` per reader config and split, and the problems: missing files
    (including images the annotations name), datasets that come out empty, and the bad
    annotations each reader skips, one line per reason with a count and a few examples.
    """
    import visionllm.datasets  # noqa: F401  (registers the readers)
    from mmengine.registry import DefaultScope

    from visionllm.registry import DATASETS

    problems = missing_inputs(cfg, pretrained=False)
    absent = {p.path for p in problems}
    reports = []
    for split, leaves in split_datasets(cfg):
        for leaf in leaves:
            kind = leaf.get("type", "?")
            ann_file = join_root(leaf.get("data_root"), leaf.get("ann_file", ""))
            reader = DATASETS.get(kind)
            task = leaf.get("task") or getattr(reader, "METAINFO", {}).get("task")
            report = DatasetReport(split, kind, task, ann_file)
            reports.append(report)
            if any(path in absent for path, _, _ in required_files(leaf)):
                continue  # already reported as missing; the reader could not start
            built = dict(leaf, pipeline=[], lazy_init=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the readers' own warnings: reported below instead
                with DefaultScope.overwrite_default_scope("visionllm"):
                    dataset = DATASETS.build(built)
            report.task = report.task or dataset.metainfo.get("task")
            report.samples = len(dataset)
            report.images = len({dataset.get_data_info(i)["img_path"] for i in range(len(dataset))})
            bad = getattr(dataset, "bad_annotations", None)
            where = f"{ann_file} [{split} {report.task}]"
            if report.samples == 0:
                report.problems.append(Problem("missing", f"{where}: no usable samples "
                                                          f"({FIX_HINTS.get(kind, 'see docs/datasets.md')})"))
            if bad is not None:
                report.bad = bad.total
                for reason, count in sorted(bad.counts.items()):
                    examples = bad.examples.get(reason, [])
                    shown = f" (e.g. {', '.join(_shown(e) for e in examples)})" if examples else ""
                    kind_of = "missing" if reason in MISSING_REASONS else "bad"
                    report.problems.append(Problem(kind_of, f"{where}: {count} {reason}{shown}"))
            problems.extend(report.problems)
    return reports, problems


def _shown(example) -> str:
    """An example id as text; image paths without the ``dir/../`` the configs' prefixes leave."""
    return os.path.normpath(example) if isinstance(example, str) and os.sep in example else str(example)


def format_reports(reports: List[DatasetReport]) -> List[str]:
    """A fixed-width table of the reports: split, reader, task, annotation file, counts."""
    header = ("split", "dataset", "task", "annotation file", "samples", "images", "skipped")
    rows = [header] + [(r.split, r.type, str(r.task), r.ann_file, str(r.samples), str(r.images), str(r.bad))
                       for r in reports]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) if i < 4 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            for row in rows]


def samples_by_task(reports: List[DatasetReport]) -> Dict[Tuple[str, str], int]:
    """Total samples per ``(split, task)``."""
    totals: Dict[Tuple[str, str], int] = {}
    for r in reports:
        totals[(r.split, str(r.task))] = totals.get((r.split, str(r.task)), 0) + r.samples
    return totals
