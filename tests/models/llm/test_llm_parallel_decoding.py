"""Output-format-as-query decoding: block mask, isolation, permutation, autoregressive equivalence."""
import pytest
import torch

from visionllm.models.llm.llm_loader import load_causal_lm
from visionllm.models.llm.parallel_decoding import (autoregressive_forward, block_attention_mask,
                                                    parallel_forward)
from visionllm.models.llm.prompt import SequenceBatch
from repo_paths import REPO

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def backbone(tiny_llama_dir):
    model, _ = load_causal_lm(tiny_llama_dir)
    return model.model.eval()


def random_prefix(lengths, width, generator):
    """Left-padded prefix batch of random embeddings with the given real lengths."""
    total = max(lengths)
    embeds = torch.randn(len(lengths), total, width, generator=generator)
    valid = torch.zeros(len(lengths), total, dtype=torch.bool)
    for b, n in enumerate(lengths):
        valid[b, total - n:] = True
    return SequenceBatch(embeds, valid, torch.full(valid.shape, -100))


def test_block_mask_structure():
    valid = torch.tensor([[False, True, True], [True, True, True]])
    mask = block_attention_mask(valid, num_groups=2, group_len=2, groups_see_each_other=False)
    allowed = mask[:, 0] == 0
    assert mask.shape == (2, 1, 7, 7)
    # Prefix: causal, padding keys hidden (a padded query only sees itself).
    assert allowed[0, 2].tolist()[:3] == [False, True, True] and allowed[0, 0].tolist()[:3] == [True, False, False]
    # Group 0 field 1 (row 4) sees the real prefix, group 0 fields 0..1, not group 1.
    assert allowed[0, 4].tolist() == [False, True, True, True, True, False, False]
    assert allowed[1, 5].tolist() == [True, True, True, False, False, True, False]
    shared = block_attention_mask(valid, 2, 2, groups_see_each_other=True)[:, 0] == 0
    assert shared[1, 5].tolist() == [True, True, True, True, True, True, False]


def test_isolated_groups_do_not_influence_each_other(backbone):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    prefix = random_prefix([9, 6], 64, g)
    groups = torch.randn(2, 5, 3, 64, generator=g)
    _, out = parallel_forward(backbone, prefix, groups)
    changed = groups.clone()
    k = int(torch.randint(0, 5, (1,), generator=g))
    changed[:, k] = torch.randn(2, 3, 64, generator=g)
    _, out2 = parallel_forward(backbone, prefix, changed)
    others = [i for i in range(5) if i != k]
    assert torch.equal(out[:, others], out2[:, others])
    assert not torch.allclose(out[:, k], out2[:, k])
    # With groups that see each other the same change reaches every group.
    _, shared = parallel_forward(backbone, prefix, groups, groups_see_each_other=True)
    _, shared2 = parallel_forward(backbone, prefix, changed, groups_see_each_other=True)
    assert not torch.allclose(shared[:, others], shared2[:, others])


@pytest.mark.parametrize("see_each_other", [False, True])
def test_permuting_groups_permutes_outputs(backbone, see_each_other):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    prefix = random_prefix([7, 11], 64, g)
    groups = torch.randn(2, 6, 4, 64, generator=g)
    perm = torch.randperm(6, generator=g)
    _, out = parallel_forward(backbone, prefix, groups, see_each_other)
    _, out_perm = parallel_forward(backbone, prefix, groups[:, perm], see_each_other)
    assert torch.allclose(out_perm, out[:, perm], atol=1e-5)


def test_left_padding_does_not_change_outputs(backbone):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    prefix = random_prefix([5, 12], 64, g)
    groups = torch.randn(2, 3, 2, 64, generator=g)
    _, batched = parallel_forward(backbone, prefix, groups)
    alone = SequenceBatch(prefix.embeds[:1, -5:], prefix.valid[:1, -5:], prefix.labels[:1, -5:])
    _, single = parallel_forward(backbone, alone, groups[:1])
    assert torch.allclose(batched[:1], single, atol=1e-5)


def test_autoregressive_baseline_reproduces_parallel_outputs(backbone):
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    prefix = random_prefix([6, 8], 64, g)
    groups = torch.randn(2, 4, 3, 64, generator=g)
    with torch.no_grad():
        _, parallel = parallel_forward(backbone, prefix, groups)
    sequential = autoregressive_forward(backbone, prefix, groups)
    assert torch.allclose(parallel, sequential, atol=1e-4)


# ---------------------------------------------------------------- the shipped configuration
SHIPPED_CONFIG = "configs/visionllm_tiny_shapes.py"
SHIPPED_CHECKPOINT = "checkpoints/visionllm_tiny_shapes.pth"


@pytest.fixture(scope="module")
def shipped_inferencer():
    import os
    from visionllm.apis.inferencer import VisionLLMInferencer
    repo = REPO
    return VisionLLMInferencer(os.path.join(repo, SHIPPED_CONFIG), os.path.join(repo, SHIPPED_CHECKPOINT))


def _shapes_instructions(tmp_path, num_images=1):
    """(image path, instruction) of detection, segmentation and grounding on generated shapes images."""
    import json
    import random

    from visionllm.datasets.shapes import build_split
    from visionllm.tasks import build_instruction
    root = tmp_path / "shapes"
    build_split("val", num_images, 11, str(root))
    coco = json.load(open(root / "annotations" / "instances_val.json"))
    refs = json.load(open(root / "annotations" / "refs_val.json"))
    names = [c["name"] for c in coco["categories"]]
    rng = random.Random(0)
    cases = []
    for image in coco["images"]:
        path = str(root / "images" / "val" / image["file_name"])
        expression = next(r["sentences"][0]["raw"] for r in refs if r["image_id"] == image["id"])
        cases += [(path, build_instruction("detection", rng, categories=names, template_index=0).text),
                  (path, build_instruction("segmentation", rng, categories=names, num_points=16,
                                           template_index=0).text),
                  (path, build_instruction("grounding", rng, expression=expression, template_index=0).text)]
    return cases


@pytest.mark.slow
def test_shipped_model_decodes_the_same_in_parallel_and_slot_by_slot(shipped_inferencer, tmp_path):
    """Every module the shipped config enables takes part (image read-out in every LLM layer,
    class pointer, token class prior, alignment-ranked grounding, box and polygon refinement);
    the one parallel pass of all slot groups must give the predictions of decoding the same
    slots one position at a time through the LLM's KV cache."""
    decoder = shipped_inferencer.model.task_decoder
    assert decoder.decode_mode == "parallel"
    # The modules are on and trained (a zero read-out would make the comparison blind to it).
    assert decoder.image_readout is not None and decoder.class_pointer is not None
    assert any(block.out.weight.abs().max() > 0 for block in decoder.image_readout.blocks)
    assert decoder.box_refinement is not None and decoder.polygon_refinement is not None
    # Slot-by-slot decoding must run through the LLM forward many times, once per position.
    calls = []
    hook = decoder.backbone.register_forward_hook(lambda module, args, kwargs_out: calls.append(1))
    try:
        for path, instruction in _shapes_instructions(tmp_path):
            decoder.decode_mode = "parallel"
            parallel = shipped_inferencer(path, instruction)
            calls.clear()
            decoder.decode_mode = "autoregressive"
            try:
                sequential = shipped_inferencer(path, instruction)
            finally:
                decoder.decode_mode = "parallel"
            assert len(calls) > 16, "the autoregressive baseline did not decode position by position"
            assert parallel.task == sequential.task
            assert len(parallel.boxes) == len(sequential.boxes) > 0
            torch.testing.assert_close(sequential.scores, parallel.scores, atol=1e-4, rtol=1e-4)
            assert (sequential.labels == parallel.labels).all()
            # Coordinates in pixels of the (192 px) image: a thousandth of a pixel apart at most.
            torch.testing.assert_close(sequential.boxes, parallel.boxes, atol=1e-3, rtol=1e-5)
            if parallel.task == "segmentation":
                torch.testing.assert_close(sequential.polygons, parallel.polygons, atol=1e-3, rtol=1e-5)
    finally:
        hook.remove()
