"""The language-guided image tokenizer: shapes, gradients, language conditioning, padding, L_tok."""
import random

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData

from visionllm.models.image_tokenizer import ImageTokenizer, TokenLoss
from visionllm.registry import MODELS
from visionllm.tasks import build_instruction

EMBED = 32
NUM_QUERIES = 8


def tiny_config(**overrides):
    cfg = dict(type="ImageTokenizer", embed_dims=EMBED,
               backbone=dict(type="ResNetBackbone", depth=18, zero_init_last=False),
               text_encoder=dict(trainable=True), fusion=dict(num_heads=4),
               transformer=dict(num_heads=4, num_points=2, ffn_dims=64, dropout=0.0, num_encoder_layers=2,
                                num_decoder_layers=2, num_queries=NUM_QUERIES, iterative_refinement=True))
    cfg.update(overrides)
    return cfg


def build(cfg):
    """A tokenizer with its starting values (``init_weights``, as the runner gives them)."""
    model = MODELS.build(cfg)
    model.init_weights()
    return model


@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(0)
    model = MODELS.build(tiny_config())
    # Refinement heads and the query-dependent sampling projections of deformable attention
    # start at zero (no correction, regular sampling grid), which makes some gradients exactly
    # zero at initialisation (e.g. the level embedding's); perturb them as training would.
    for head in model.transformer.refine_heads:
        torch.nn.init.normal_(head[-1].weight, std=0.01)
    for name, module in model.transformer.named_modules():
        if name.endswith(("sampling_offsets", "attention_weights")):
            torch.nn.init.normal_(module.weight, std=0.01)
    return model.eval()


def make_sample(h, w, boxes, categories=None, labels=None, task="detection"):
    # The tokenizer reads the task from the instruction, as the model does.
    instruction = build_instruction(task, random.Random(0), categories=categories or ["object"],
                                    expression="the object", question="how many are there?", template_index=0)
    metainfo = dict(img_shape=(h, w), task=task, instruction=instruction.text)
    if categories is not None:
        metainfo["categories"] = categories
    sample = DetDataSample(metainfo=metainfo)
    labels = torch.zeros(len(boxes), dtype=torch.long) if labels is None else torch.as_tensor(labels)
    sample.gt_instances = InstanceData(bboxes=torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                       labels=labels)
    return sample


def test_output_shapes_and_ranges(tokenizer):
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = tokenizer(images, None, ["Detect every cat in <image>.", "<image> Write a caption."])
    assert out["embeds"].shape == (2, NUM_QUERIES, EMBED)
    assert out["reference_points"].shape == (2, NUM_QUERIES, 2)
    assert out["objectness_logits"].shape == (2, NUM_QUERIES)
    assert len(out["aux_reference_points"]) == 1  # 2 decoder layers -> 1 auxiliary output
    assert ((out["reference_points"] >= 0) & (out["reference_points"] <= 1)).all()
    assert torch.isfinite(out["embeds"]).all()
    assert tokenizer.embed_dims == EMBED


def test_gradients_reach_every_trainable_part(tokenizer):
    tokenizer.train()
    try:
        tokenizer.zero_grad()
        images = torch.randn(2, 3, 64, 64)
        masks = torch.zeros(2, 64, 64, dtype=torch.bool)
        masks[1, 48:] = True
        out = tokenizer(images, masks, ["Detect every cat in <image>.", "Find the dog in <image>."])
        samples = [make_sample(64, 64, [[4, 4, 30, 40], [20, 10, 60, 60]], ["dog", "cat"], [1, 0]),
                   make_sample(48, 64, [[1, 2, 20, 30]], ["the dog"], [0])]
        losses = tokenizer.loss(out, samples)
        assert {"loss_tok_obj", "loss_tok_ref", "loss_tok_cls", "d0.loss_tok_obj", "d0.loss_tok_ref",
                "d0.loss_tok_cls"} <= set(losses)
        sum(losses.values()).backward()
        without = [name for name, p in tokenizer.named_parameters()
                   if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
        assert without == []
        for part in ("backbone", "text_encoder.bert", "text_encoder.proj", "fusion", "transformer.encoder_layers",
                     "transformer.decoder_layers", "transformer.refine_heads", "objectness", "name_query",
                     "name_bias", "token_position"):
            assert any(name.startswith(part) for name, p in tokenizer.named_parameters() if p.grad is not None)
    finally:
        tokenizer.zero_grad()
        tokenizer.eval()


def test_frozen_text_encoder_and_backbone_get_no_gradient():
    torch.manual_seed(1)
    model = MODELS.build(tiny_config(text_encoder=dict(trainable=False), freeze_backbone=True))
    model.train()
    assert not model.backbone.training and not model.text_encoder.bert.training
    out = model(torch.randn(1, 3, 64, 64), None, ["Detect every cat in <image>."])
    sum(model.loss(out, [make_sample(64, 64, [[4, 4, 30, 40]])]).values()).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is None for p in model.text_encoder.bert.parameters())
    assert model.text_encoder.proj.weight.grad is not None
    assert model.fusion.attn[0].in_proj_weight.grad is not None


def test_instruction_changes_tokens_but_padding_does_not(tokenizer):
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = tokenizer(image, None, ["Detect every cat in <image>."])
        b = tokenizer(image, None, ["Find the small red dog on the left in <image>."])
        padded = tokenizer(image, None, ["Detect every cat in <image>."], text_pad_to_length=40)
        # the same text padded inside a batch with a longer one
        batched = tokenizer(image.expand(2, -1, -1, -1), None,
                            ["Detect every cat in <image>.", "a much longer instruction " * 5 + "<image>"])
    assert (a["embeds"] - b["embeds"]).abs().max() > 1e-3
    torch.testing.assert_close(padded["embeds"], a["embeds"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(padded["reference_points"], a["reference_points"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(batched["embeds"][:1], a["embeds"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("sizes", [((64, 96), (40, 56)), ((48, 48), (64, 32))])
def test_padded_batch_matches_each_image_alone(tokenizer, sizes):
    texts = ["Detect every cat in <image>.", "Find the dog on the left in <image>."]
    singles = [torch.randn(1, 3, h, w) for h, w in sizes]
    height = max(h for h, _ in sizes)
    width = max(w for _, w in sizes)
    batch = torch.zeros(2, 3, height, width)
    masks = torch.ones(2, height, width, dtype=torch.bool)
    for i, (h, w) in enumerate(sizes):
        batch[i, :, :h, :w] = singles[i][0]
        masks[i, :h, :w] = False
    with torch.no_grad():
        together = tokenizer(batch, masks, texts)
        for i in range(2):
            alone = tokenizer(singles[i], None, texts[i:i + 1])
            torch.testing.assert_close(together["embeds"][i:i + 1], alone["embeds"], atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(together["reference_points"][i:i + 1], alone["reference_points"],
                                       atol=2e-6, rtol=1e-5)
            torch.testing.assert_close(together["objectness_logits"][i:i + 1], alone["objectness_logits"],
                                       atol=2e-5, rtol=1e-4)


def test_token_loss_matches_tokens_to_object_centres():
    torch.manual_seed(2)
    num_tokens = 12
    points = torch.rand(2, num_tokens, 2, requires_grad=True)
    logits = torch.randn(2, num_tokens, requires_grad=True)
    chosen = [torch.randperm(num_tokens)[:3], torch.randperm(num_tokens)[:1]]
    centres = [points[b, idx].detach().clone() for b, idx in enumerate(chosen)]
    loss_fn = TokenLoss(match_obj_weight=0.0)  # geometry alone decides the matching
    losses = loss_fn(logits, points, centres)
    assert losses["loss_tok_ref"].item() == pytest.approx(0.0, abs=1e-6)
    # moving a matched point away costs exactly ref_weight * |shift| / num_gts
    shifted = points.detach().clone()
    shifted[0, chosen[0][0], 0] += 0.01
    moved = loss_fn(logits, shifted, centres)["loss_tok_ref"].item()
    assert moved == pytest.approx(loss_fn.ref_weight * 0.01 / 4, rel=1e-3)
    # the objectness loss pushes the matched tokens up and all others down
    losses["loss_tok_obj"].backward()
    matched = torch.zeros(2, num_tokens, dtype=torch.bool)
    for b, idx in enumerate(chosen):
        matched[b, idx] = True
    assert (logits.grad[matched] < 0).all() and (logits.grad[~matched] > 0).all()


def test_name_alignment_raises_the_matched_token_on_its_own_name_only():
    torch.manual_seed(3)
    num_tokens, num_names = 10, 4
    points = torch.rand(1, num_tokens, 2)
    objectness = torch.randn(1, num_tokens)
    chosen = torch.randperm(num_tokens)[:2]
    centres = [points[0, chosen].clone()]
    labels = [torch.tensor([2, 0])]
    class_logits = torch.randn(num_tokens, num_names, requires_grad=True)
    loss_fn = TokenLoss(match_obj_weight=0.0)
    losses = loss_fn(objectness, points, centres, [class_logits], labels)
    losses["loss_tok_cls"].backward()
    positive = torch.zeros(num_tokens, num_names, dtype=torch.bool)
    positive[chosen[0], 2] = positive[chosen[1], 0] = True
    assert (class_logits.grad[positive] < 0).all() and (class_logits.grad[~positive] > 0).all()
    # confident right answers cost (almost) nothing, confident wrong ones cost a lot
    right = torch.where(positive, 8.0, -8.0)
    wrong = torch.where(positive.roll(1, dims=1), 8.0, -8.0)
    assert loss_fn(objectness, points, centres, [right], labels)["loss_tok_cls"].item() < 1e-3
    assert loss_fn(objectness, points, centres, [wrong], labels)["loss_tok_cls"].item() > 1.0
    # an image without names (caption, VQA) adds nothing
    none = loss_fn(objectness, points, [centres[0][:0]], [None], [labels[0][:0]])
    assert none["loss_tok_cls"].item() == 0.0


def test_tokenizer_loss_normalises_centres_by_image_shape(tokenizer):
    # a sample without objects: only the background objectness term, reference L1 is zero
    h, w = 40, 80
    boxes = torch.tensor([[8.0, 4.0, 24.0, 20.0], [40.0, 10.0, 80.0, 40.0]])
    centres = ((boxes[:, :2] + boxes[:, 2:]) / 2) / torch.tensor([w, h])
    points = torch.rand(1, NUM_QUERIES, 2)
    points[0, 3] = centres[0]
    points[0, 5] = centres[1]
    outputs = dict(objectness_logits=torch.zeros(1, NUM_QUERIES), reference_points=points)
    losses = tokenizer.loss(outputs, [make_sample(h, w, boxes)])
    assert losses["loss_tok_ref"].item() == pytest.approx(0.0, abs=1e-6)
    empty = tokenizer.loss(outputs, [make_sample(h, w, [])])
    assert empty["loss_tok_ref"].item() == 0.0 and empty["loss_tok_obj"].item() > 0


def test_text_encoder_loads_any_local_bert_directory(tmp_path):
    """A bert-base style directory (here a tiny BERT the test saves) loads like the embedded MiniLM."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from visionllm.models.image_tokenizer import TextEncoder
    from visionllm.utils.embedded import minilm_dir

    torch.manual_seed(3)
    bert = BertModel(BertConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                                vocab_size=30522))
    bert.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(tmp_path)
    encoder = TextEncoder(model_dir=str(tmp_path), embed_dims=16, trainable=False).eval()
    torch.testing.assert_close(encoder.bert.encoder.layer[1].output.dense.weight, bert.encoder.layer[1].output.dense.weight)
    assert not any(p.requires_grad for p in encoder.bert.parameters()) and encoder.proj.weight.requires_grad
    texts = ["find the dog", "detect every cat and every dog in the picture"]
    with torch.no_grad():
        features, padding = encoder(texts)
    lengths = [len(encoder.tokenizer(t)["input_ids"]) for t in texts]
    assert features.shape == (2, max(lengths), 16)
    assert padding.tolist() == [[i >= n for i in range(max(lengths))] for n in lengths]


def test_internimage_tokenizer_end_to_end():
    torch.manual_seed(4)
    model = MODELS.build(tiny_config(backbone=dict(type="InternImageBackbone", channels=16, depths=(1, 1, 1, 1),
                                                   groups=(2, 4, 8, 16), drop_path_rate=0.0)))
    model.train()
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, :, 40:] = True
    out = model(torch.randn(2, 3, 64, 64), masks, ["Detect every cat in <image>.", "Find the dog in <image>."])
    assert out["embeds"].shape == (2, NUM_QUERIES, EMBED)
    losses = model.loss(out, [make_sample(64, 40, [[2, 2, 20, 30]]), make_sample(64, 64, [[10, 10, 50, 60]])])
    sum(losses.values()).backward()
    dcn = model.backbone.body.levels[0].blocks[0].dcn
    for param in (dcn.offset.weight, dcn.mask.weight, dcn.input_proj.weight, model.backbone.body.patch_embed.conv1.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_captions_and_questions_supervise_tokens_only_where_boxes_are_known(tokenizer):
    """A detection image without objects teaches "no objects here"; a caption or question without
    boxes knows nothing about objects and adds no token loss; with its image's boxes it teaches
    tokens to sit on them like a box task."""
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    h, w = 48, 64
    boxes = torch.tensor([[4.0, 6.0, 20.0, 30.0], [30.0, 10.0, 60.0, 44.0]])
    logits = torch.randn(1, NUM_QUERIES, generator=g)
    points = torch.rand(1, NUM_QUERIES, 2, generator=g)

    def outputs():
        return dict(objectness_logits=logits.clone().requires_grad_(), reference_points=points.clone())

    for task in ("caption", "vqa"):
        out = outputs()
        losses = tokenizer.loss(out, [make_sample(h, w, [], labels=[], task=task)])
        assert losses["loss_tok_obj"].item() == 0.0 and losses["loss_tok_ref"].item() == 0.0
        with_boxes = tokenizer.loss(outputs(), [make_sample(h, w, boxes, labels=[-1, -1], task=task)])
        as_detection = tokenizer.loss(outputs(), [make_sample(h, w, boxes, task="detection")])
        assert with_boxes["loss_tok_ref"].item() > 0
        for name in ("loss_tok_obj", "loss_tok_ref"):
            assert with_boxes[name].item() == pytest.approx(as_detection[name].item(), rel=1e-6)
    out = outputs()
    negatives = tokenizer.loss(out, [make_sample(h, w, [], task="detection")])
    assert negatives["loss_tok_obj"].item() > 0
    # in a mixed batch the unsupervised image's tokens get no gradient, the other's do
    out = dict(objectness_logits=logits.repeat(2, 1).requires_grad_(), reference_points=points.repeat(2, 1, 1))
    samples = [make_sample(h, w, [], labels=[], task="caption"), make_sample(h, w, boxes, task="detection")]
    tokenizer.loss(out, samples)["loss_tok_obj"].backward()
    grad = out["objectness_logits"].grad
    assert (grad[0] == 0).all() and (grad[1] != 0).any()


def test_token_position_starts_at_zero_then_tells_tokens_where_they_are():
    torch.manual_seed(4)
    with_position = build(tiny_config()).eval()
    images, texts = torch.randn(1, 3, 64, 64), ["Find the cat on the left in <image>."]
    with torch.no_grad():
        assert not with_position.token_position(torch.rand(5, 2)).any()
    # once trained, the embedding separates positions, and it reads the points without pulling on them
    torch.nn.init.normal_(with_position.token_position.proj.weight)
    points = torch.rand(5, 2)
    codes = with_position.token_position(points)
    assert torch.cdist(codes, codes)[~torch.eye(5, dtype=torch.bool)].min() > 1e-3
    out = with_position(images, None, texts)
    out["embeds"].sum().backward()
    last_refine = with_position.transformer.refine_heads[-1]
    assert all(p.grad is None or not p.grad.any() for p in last_refine.parameters())
    assert with_position.token_position.proj.weight.grad.abs().sum() > 0


def test_token_appearance_starts_at_zero_then_reads_the_pixels_under_each_token():
    torch.manual_seed(5)
    with_pixels = build(tiny_config()).eval()
    without = build(tiny_config(token_appearance=None)).eval()
    assert without.token_appearance is None
    assert without.load_state_dict(with_pixels.state_dict(), strict=False).unexpected_keys == [
        "token_appearance.proj.weight", "token_appearance.proj.bias"]
    images, texts = torch.randn(1, 3, 64, 64), ["What colour is the cat in <image>?"]
    with torch.no_grad():
        assert torch.equal(with_pixels(images, None, texts)["embeds"], without(images, None, texts)["embeds"])
    torch.nn.init.normal_(with_pixels.token_appearance.proj.weight)
    out = with_pixels(images, None, texts)
    out["embeds"].sum().backward()
    # the pixels are read at the points without pulling on them
    assert all(p.grad is None or not p.grad.any() for p in with_pixels.transformer.refine_heads[-1].parameters())
    assert with_pixels.token_appearance.proj.weight.grad.abs().sum() > 0
    # the same image with new colours changes the tokens only through the appearance embedding
    recoloured = images.clone()
    recoloured[:, 0] += 1.0
    with torch.no_grad():
        delta_with = with_pixels(recoloured, None, texts)["embeds"] - with_pixels(images, None, texts)["embeds"]
        delta_without = without(recoloured, None, texts)["embeds"] - without(images, None, texts)["embeds"]
        masks = torch.zeros(1, 64, 64, dtype=torch.bool)
        pixel_delta = (with_pixels.token_appearance(recoloured, masks, without(recoloured, None, texts)["reference_points"])
                       - with_pixels.token_appearance(images, masks, without(images, None, texts)["reference_points"]))
    torch.testing.assert_close(delta_with, delta_without + pixel_delta, rtol=1e-4, atol=1e-4)


def test_category_names_are_encoded_once_per_set_until_the_weights_change(tokenizer, monkeypatch):
    """Inference asks the same category set of image after image: the text encoder runs once
    per set; a new set, a weight update or a gradient-recording call encodes again, and the
    remembered names are the ones a fresh encoding gives."""
    calls = []
    encode = tokenizer._encode_names
    monkeypatch.setattr(tokenizer, "_encode_names", lambda names: calls.append(tuple(names)) or encode(names))
    samples = [make_sample(64, 64, [[1, 1, 9, 9]], categories=["circle", "square"]) for _ in range(2)]
    with torch.no_grad():
        first = tokenizer.names_of(samples[:1], "cpu")
        again = tokenizer.names_of(samples[1:], "cpu")
        assert len(calls) == 1 and torch.equal(first[0][0], again[0][0])
        tokenizer.names_of([make_sample(64, 64, [[1, 1, 9, 9]], categories=["star"])], "cpu")
        assert len(calls) == 2
        tokenizer.names_of(samples[:1], "cpu")
        assert len(calls) == 3
        weight = tokenizer.text_encoder.proj.weight
        saved = weight.clone()
        weight.add_(torch.randn_like(weight) * 0.05)  # as an optimizer step or load_state_dict would, in place
        try:
            changed = tokenizer.names_of(samples[:1], "cpu")
            assert len(calls) == 4 and not torch.allclose(changed[0][0], first[0][0])
        finally:
            weight.copy_(saved)
    for _ in range(2):  # gradients recorded: always a fresh encoding
        tokenizer.names_of(samples[:1], "cpu")
    assert len(calls) == 6
