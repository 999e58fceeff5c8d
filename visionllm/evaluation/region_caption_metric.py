"""Region captioning metric: BLEU-4 / CIDEr of each description against its object's references,
and how often the described shape and colour are the object's."""
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from mmengine.evaluator import BaseMetric

from visionllm.registry import METRICS

from .caption_metric import own_scores
from .table import print_table
from .utils import dump_json, samples_of_task


def _default_vocabulary() -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    from visionllm.datasets.shape_colours import COLOUR_NAMES
    from visionllm.datasets.shapes import COLOURS, SHAPE_KINDS
    return tuple(SHAPE_KINDS), tuple(dict.fromkeys(list(COLOURS) + list(COLOUR_NAMES)))


class WordFinder:
    """The first of a set of names (whole words, longest first) that a text states, or None."""

    def __init__(self, names: Iterable[str]):
        names = sorted({n.lower() for n in names}, key=len, reverse=True)
        self.pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b") if names else None

    def first(self, text: str) -> Optional[str]:
        match = self.pattern.search(text.lower()) if self.pattern else None
        return match.group(1) if match else None


def attributes_right(prediction: str, reference: str, shapes: WordFinder, colours: WordFinder) -> Tuple[bool, bool]:
    """(shape right, colour right): the first shape / colour word of ``prediction`` equals that of
    ``reference`` (a description naming both); a prediction naming none is wrong."""
    shape, colour = shapes.first(reference), colours.first(reference)
    said_shape, said_colour = shapes.first(prediction), colours.first(prediction)
    return (shape is not None and said_shape == shape), (colour is not None and said_colour == colour)


@METRICS.register_module()
class RegionCaptionMetric(BaseMetric):
    """Scores ``pred_text`` against ``gt_texts`` (the region's references: a description naming
    size, colour and kind first, then its referring expressions) per sample, in percent:
    ``BLEU-4`` and ``CIDEr`` (the caption metric's own scorers, ``caption_scores``), ``Shape``
    and ``Colour`` (the first shape / colour word said is the one of the first reference) and
    ``ShapeColour`` (both right). ``shape_names`` / ``colour_names`` default to the shapes
    data's. Dumps ``<outfile_prefix>.region_caption.json``: ``[{ann_id, caption}]``."""

    default_prefix = "region_caption"

    def __init__(self, outfile_prefix: Optional[str] = None, task: Optional[str] = "region_caption",
                 shape_names: Optional[Sequence[str]] = None, colour_names: Optional[Sequence[str]] = None,
                 collect_device: str = "cpu", prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        default_shapes, default_colours = _default_vocabulary()
        self.outfile_prefix = outfile_prefix
        self.task = task
        self.shapes = WordFinder(default_shapes if shape_names is None else shape_names)
        self.colours = WordFinder(default_colours if colour_names is None else colour_names)

    def process(self, data_batch, data_samples) -> None:
        for sample in samples_of_task(data_samples, self.task):
            gts = list(sample.get("gt_texts") or [])
            if gts:
                self.results.append(dict(ann_id=sample.get("ann_id"), caption=sample.get("pred_text") or "",
                                         gt_texts=gts))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        if self.outfile_prefix:
            dump_json([dict(ann_id=r["ann_id"], caption=r["caption"]) for r in results],
                      f"{self.outfile_prefix}.region_caption.json")
        refs = {i: r["gt_texts"] for i, r in enumerate(results)}
        hyps = {i: r["caption"] for i, r in enumerate(results)}
        scores = own_scores(refs, hyps)
        right = [attributes_right(r["caption"], r["gt_texts"][0], self.shapes, self.colours) for r in results]
        share = lambda values: 100.0 * sum(values) / len(values) if values else 0.0  # noqa: E731
        metrics = {"BLEU-4": scores["BLEU-4"] * 100, "CIDEr": scores["CIDEr"] * 100,
                   "Shape": share([s for s, _ in right]), "Colour": share([c for _, c in right]),
                   "ShapeColour": share([s and c for s, c in right])}
        print_table(f"Region captioning ({len(results)} regions; own BLEU / CIDEr-D scorer; shape and colour "
                    f"named right in percent)", list(metrics), [list(metrics.values())])
        return metrics
