"""Finishing only the slots that can be kept: the same predictions above a score threshold, with
the coordinates of the other slots never decoded."""
import pytest
import torch
from tiny_llm import build_decoder, make_sample
from transformers import DynamicCache

from visionllm.instructions import format_category_set
from visionllm.models.llm import parallel_decoding
from visionllm.models.llm.llm_loader import load_causal_lm
from visionllm.models.llm.parallel_decoding import parallel_forward, pruned_parallel_forward
from visionllm.models.llm.prompt import SequenceBatch

pytestmark = pytest.mark.usefixtures("single_thread")

NAMES = ["cat", "dog", "cow"]


def test_pruned_pass_gives_the_full_pass_on_the_kept_groups(tiny_llama_dir):
    model, _ = load_causal_lm(tiny_llama_dir)
    backbone = model.model.double().eval()
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    width = backbone.config.hidden_size
    valid = torch.ones(2, 8, dtype=torch.bool)
    valid[1, :3] = False  # left padding
    prefix = SequenceBatch(torch.randn(2, 8, width, generator=g, dtype=torch.float64), valid,
                           torch.full(valid.shape, -100))
    groups = torch.randn(2, 6, 5, width, generator=g, dtype=torch.float64)
    chosen = torch.rand(2, 6, generator=g) < 0.5
    chosen[0, 0], chosen[1, 1] = True, False  # rows keep different numbers of groups
    calls, seen = [], {}
    hook = backbone.register_forward_pre_hook(lambda *args: calls.append(1))

    def keep(prefix_hidden, first_hidden):
        seen.update(prefix=prefix_hidden, first=first_hidden)
        return chosen

    try:
        with torch.no_grad():
            cache = DynamicCache(config=backbone.config)
            prefix_hidden, group_hidden = pruned_parallel_forward(backbone, prefix, groups, cache, keep)
    finally:
        hook.remove()
    with torch.no_grad():
        full_prefix, full_groups = parallel_forward(backbone, prefix, groups)
    assert len(calls) == 2 and cache.get_seq_length() == 8
    assert torch.allclose(seen["first"], full_groups[:, :, 0], atol=1e-10, rtol=0)
    assert torch.allclose(prefix_hidden, full_prefix, atol=1e-10, rtol=0)
    assert torch.allclose(group_hidden[chosen], full_groups[chosen], atol=1e-10, rtol=0)
    dropped = group_hidden[~chosen]
    assert torch.allclose(dropped[:, 0], full_groups[~chosen][:, 0], atol=1e-10, rtol=0)
    assert not dropped[:, 1:].any()


@pytest.fixture(scope="module")
def decoder(tiny_llama_dir):
    decoder = build_decoder(tiny_llama_dir, num_slots=4, generate_format=True).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        decoder.head.new_weight.normal_(0, 3.0, generator=generator)
        decoder.class_pointer.key.weight.normal_(0, 0.1, generator=generator)
    return decoder


def predict(decoder, samples, embeds, refs, score_thr=None):
    samples = [s.clone() for s in samples]
    if score_thr is not None:
        for sample in samples:
            sample.set_metainfo(dict(score_thr=score_thr))
    calls = []
    hook = decoder.backbone.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        return [s.pred_instances for s in decoder.predict(embeds, refs, samples)], len(calls)
    finally:
        hook.remove()


def test_a_score_threshold_returns_the_full_predictions_above_it(decoder, monkeypatch):
    texts = [f"Segment {format_category_set(NAMES)} in <image> as (c, x1, y1, x2, y2, x3, y3, x4, y4).",
             f"Detect {format_category_set(NAMES)} in <image>. Answer as (c, x1, y1, x2, y2)."] * 3
    samples = [make_sample("segmentation", text, categories=NAMES, scale_factor=(0.5, 0.8)) for text in texts]
    samples.append(make_sample("grounding", 'Find "the big square" in <image> and give (c, x1, y1, x2, y2).',
                               categories=["the big square"]))
    generator = torch.Generator().manual_seed(torch.seed() % 2**31)
    embeds, refs = torch.randn(len(samples), 4, 64, generator=generator), torch.rand(len(samples), 4, 2,
                                                                                   generator=generator)
    monkeypatch.setattr(parallel_decoding, "PRUNING_MIN_POSITIONS", 10**9)  # every slot finished
    full, full_calls = predict(decoder, samples, embeds, refs)
    monkeypatch.setattr(parallel_decoding, "PRUNING_MIN_POSITIONS", 1)  # the tiny decoder has 4 slots
    scores = torch.cat([p.scores for p in full[:-1]])
    threshold = float(scores.median())
    pruned, pruned_calls = predict(decoder, samples, embeds, refs, threshold)
    assert pruned_calls == full_calls + 2  # each drafted pass (boxes, polygons) took two steps
    kept_any = dropped_any = False
    for i, (before, after) in enumerate(zip(full, pruned)):
        grounding = i == len(samples) - 1  # its one box, whatever its score
        keep = torch.ones(len(before), dtype=torch.bool) if grounding else before.scores >= threshold
        kept_any, dropped_any = kept_any or bool(keep.any()), dropped_any or not bool(keep.all())
        assert torch.equal(after.labels, before.labels[keep])
        assert torch.allclose(after.scores, before.scores[keep], atol=1e-6)
        assert torch.allclose(after.bboxes, before.bboxes[keep], atol=1e-3)
        if "polygons" in before:
            assert torch.allclose(after.polygons, before.polygons[keep], atol=1e-3)
    assert kept_any and dropped_any
