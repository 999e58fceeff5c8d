"""LLMTaskDecoder end to end on a tiny random Llama: overfitting every task, checkpoints, passes."""
import math

import pytest
import torch
from fresh_seed import seed_and_generator
from tiny_llm import build_decoder, fit_decoder, make_sample

from visionllm.instructions import LocationCodec, format_category_set

IMG_SHAPE = (64, 80)  # (h, w) after resize
SCALE = (0.5, 0.8)    # (w_scale, h_scale): ori = img / scale
NUM_POINTS = 8
NUM_BINS = 65
LORA = dict(rank=8, alpha=16, dropout=0.0, include_mlp=True)

pytestmark = pytest.mark.usefixtures("single_thread")


def random_box(g, w, h):
    bw, bh = 10 + torch.rand(1, generator=g).item() * w * 0.4, 10 + torch.rand(1, generator=g).item() * h * 0.4
    x1, y1 = torch.rand(1, generator=g).item() * (w - bw), torch.rand(1, generator=g).item() * (h - bh)
    return [x1, y1, x1 + bw, y1 + bh]


def random_polygon(g, w, h, k):
    cx, cy = 20 + torch.rand(1, generator=g).item() * (w - 40), 20 + torch.rand(1, generator=g).item() * (h - 40)
    radius = 5 + torch.rand(k, generator=g) * 12
    angle = torch.arange(k) * 2 * math.pi / k
    return torch.stack([cx + radius * angle.cos(), cy + radius * angle.sin()], dim=-1)


def task_samples(g):
    h, w = IMG_SHAPE
    det = make_sample("detection", 'Detect every object of the categories ' + format_category_set(["cat", "dog", "cow"])
                      + ' in <image>. Answer as a list of (c, x1, y1, x2, y2).',
                      categories=["cat", "dog", "cow"], output_format=("cls", "x1", "y1", "x2", "y2"),
                      bboxes=[random_box(g, w, h), random_box(g, w, h)], labels=[2, 0],
                      img_shape=IMG_SHAPE, scale_factor=SCALE)
    polygon = random_polygon(g, w, h, NUM_POINTS)
    fields = ("cls",) + tuple(f"{a}{i}" for i in range(1, NUM_POINTS + 1) for a in "xy")
    seg = make_sample("segmentation", 'Segment all {"circle": <c0>} in <image> as (c, x1, y1, ..., x8, y8), '
                      'points relative to the object centre.', categories=["circle"], output_format=fields,
                      bboxes=[torch.cat([polygon.min(0).values, polygon.max(0).values]).tolist()],
                      labels=[0], polygons=polygon[None], img_shape=IMG_SHAPE, scale_factor=SCALE)
    grd = make_sample("grounding", 'Find "the big square" in <image> and give (c, x1, y1, x2, y2).',
                      categories=["the big square"], output_format=("cls", "x1", "y1", "x2", "y2"),
                      bboxes=[random_box(g, w, h)], labels=[0], img_shape=IMG_SHAPE, scale_factor=SCALE)
    cap = make_sample("caption", "<image> Write a short caption for the image.", target_text="two red circles",
                      img_shape=IMG_SHAPE, scale_factor=SCALE)
    return [det, seg, grd, cap]


@pytest.fixture(scope="module")
def trained(single_thread, tiny_llama_dir):
    seed, g = seed_and_generator()  # fresh data every run
    # LoRA on the MLP too: a random 2-layer model needs the capacity to fit text with a frozen head.
    decoder = build_decoder(tiny_llama_dir, num_slots=5, no_object_weight=0.5, lora=LORA)
    samples = task_samples(g)
    embeds = torch.randn(len(samples), 6, decoder.hidden_size, generator=g)
    refs = torch.rand(len(samples), 6, 2, generator=g)
    # 130 steps left loss_format at 0.13 for seed 1802884884; 200 reach every target there.
    losses = fit_decoder(decoder, embeds, refs, samples, steps=200)
    return dict(decoder=decoder, samples=samples, embeds=embeds, refs=refs, losses=losses, seed=seed)


def tolerance():
    # Decoded coordinates equal the target up to the codec's quantisation: half a bin, in
    # original-image pixels.
    half = NUM_BINS // 2
    return torch.tensor([IMG_SHAPE[1] / half / 2 / SCALE[0], IMG_SHAPE[0] / half / 2 / SCALE[1]]) + 1e-3


def to_original(points):
    return points / torch.tensor(SCALE)


def test_overfitting_every_task_reaches_its_targets(trained):
    losses, seed = trained["losses"], trained["seed"]
    assert set(losses) == {"loss_format", "loss_cls", "loss_loc", "loss_loc_l1", "loss_text"}
    assert all(v < 0.05 for v in losses.values()), f"seed {seed}: {losses}"
    decoder = trained["decoder"]
    decoder.generate_format = True  # the trained model must also emit the right format tokens
    samples = decoder.predict(trained["embeds"], trained["refs"], trained["samples"])
    det, seg, grd, cap = samples
    tol = tolerance()

    pred = det.pred_instances
    n_gt = len(det.gt_instances.bboxes)
    assert (pred.scores[:n_gt] > 0.9).all() and (pred.scores[n_gt:] < 0.5).all(), f"seed {seed}"
    for box, label in zip(det.gt_instances.bboxes, det.gt_instances.labels):
        corners = to_original(box.view(2, 2))
        hits = [(b.view(2, 2) - corners).abs() for b in pred.bboxes[:n_gt]]
        k = min(range(n_gt), key=lambda i: hits[i].sum())
        assert (hits[k] <= tol).all(), f"seed {seed}: {pred.bboxes} vs {det.gt_instances.bboxes}"
        assert pred.labels[k].item() == det.category_ids[label]

    pred = seg.pred_instances
    assert pred.scores[0] > 0.9 and (pred.scores[1:] < 0.5).all()
    assert pred.polygons.shape[1:] == (NUM_POINTS, 2)
    assert ((pred.polygons[0] - to_original(seg.gt_instances.polygons[0])).abs() <= tol).all(), f"seed {seed}"
    assert pred.masks.shape[1:] == tuple(seg.ori_shape) and pred.masks[0].any()
    centre = pred.polygons[0].mean(0).round().long()
    assert pred.masks[0][centre[1], centre[0]], "the polygon's centre lies inside its mask"

    pred = grd.pred_instances
    assert len(pred) == 1 and pred.scores[0] > 0.9
    assert ((pred.bboxes[0].view(2, 2) - to_original(grd.gt_instances.bboxes[0].view(2, 2))).abs() <= tol).all()

    assert cap.pred_text == "two red circles"
    beam = decoder.generate_text(trained["embeds"][3:], [cap.instruction], num_beams=3)
    assert beam == ["two red circles"]


def test_autoregressive_baseline_gives_the_same_detections(trained):
    decoder = trained["decoder"]
    decoder.generate_format = False
    idx = [0, 1]
    samples = [trained["samples"][i] for i in idx]
    parallel = [s.pred_instances.clone() for s in decoder.predict(trained["embeds"][idx], trained["refs"][idx], samples)]
    decoder.decode_mode = "autoregressive"
    try:
        sequential = decoder.predict(trained["embeds"][idx], trained["refs"][idx], samples)
    finally:
        decoder.decode_mode = "parallel"
    for a, b in zip(parallel, sequential):
        assert torch.allclose(a.scores, b.pred_instances.scores, atol=1e-4)
        assert torch.allclose(a.bboxes, b.pred_instances.bboxes, atol=1e-3)


def test_save_load_trainable_state_reproduces_predictions(trained, tiny_llama_dir, tmp_path):
    decoder = trained["decoder"]
    decoder.generate_format = False
    samples = trained["samples"]
    before = [s.pred_instances.clone() if "pred_instances" in s else s.pred_text
              for s in decoder.predict(trained["embeds"], trained["refs"], samples)]
    state = decoder.trainable_state_dict()
    frozen = set(decoder.frozen_pretrained_keys())
    assert frozen and not frozen & set(state), "frozen base weights must not be checkpointed"
    assert sum(v.numel() for v in state.values()) < 0.2 * sum(p.numel() for p in decoder.parameters())
    torch.save(state, tmp_path / "decoder.pth")

    torch.manual_seed(12345)  # a different initialisation that the checkpoint must overwrite
    fresh = build_decoder(tiny_llama_dir, num_slots=5, no_object_weight=0.5, generate_format=False, seed=7,
                          lora=LORA)
    fresh.load_trainable_state_dict(torch.load(tmp_path / "decoder.pth"))
    fresh.eval()
    after = fresh.predict(trained["embeds"], trained["refs"], [s.clone() for s in samples])
    for b, a in zip(before, after):
        if isinstance(b, str):
            assert a.pred_text == b
        else:
            for key in ("scores", "bboxes", "labels"):
                assert torch.equal(getattr(a.pred_instances, key), getattr(b, key))


def five_names_in_passes_of_two(llm_dir):
    """An eval-mode decoder of 4 slots whose 5-name detection instruction runs in 3 passes,
    with random image tokens: ``(generator, names, decoder, text, embeds, refs)``."""
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    names = ["cat", "dog", "cow", "owl", "fox"]
    decoder = build_decoder(llm_dir, num_slots=4, max_classes_per_pass=2)
    decoder.eval()
    text = "Detect " + format_category_set(names) + " in <image>. Answer as (c, x1, y1, x2, y2)."
    embeds, refs = torch.randn(1, 4, 64, generator=g), torch.rand(1, 4, 2, generator=g)
    return g, names, decoder, text, embeds, refs


def test_category_sets_beyond_the_budget_run_in_passes(tiny_llama_dir):
    g, names, decoder, text, embeds, refs = five_names_in_passes_of_two(tiny_llama_dir)
    merged = decoder.predict(embeds, refs, [make_sample("detection", text, categories=names)])[0].pred_instances
    assert len(merged) == 3 * 4  # three passes (2 + 2 + 1 names) of four slots each
    # The same predictions as running each chunk's instruction on its own, labels offset by chunk.
    expected_scores, expected_labels = [], []
    for start in (0, 2, 4):
        chunk = names[start:start + 2]
        sample = make_sample("detection", text.replace(format_category_set(names), format_category_set(chunk)),
                             categories=chunk)
        pred = decoder.predict(embeds, refs, [sample])[0].pred_instances
        expected_scores.append(pred.scores)
        expected_labels.append(pred.labels + start)  # make_sample maps label i to id 10 + i
    scores, labels = torch.cat(expected_scores), torch.cat(expected_labels)
    order = scores.argsort(descending=True)
    assert torch.allclose(merged.scores, scores[order], atol=1e-5)
    assert sorted(merged.labels.tolist()) == sorted(labels.tolist())
    assert set(merged.labels.tolist()) <= {10 + i for i in range(len(names))}


def test_format_generation_falls_back_to_the_parser(tiny_llama_dir, monkeypatch):
    decoder = build_decoder(tiny_llama_dir, generate_format=True)
    embeds = torch.randn(2, 3, 64)
    texts = ["Detect {\"a\": <c0>} in <image>. Answer as (c, x1, y1, x2, y2).",
             "Segment {\"a\": <c0>} in <image> as (c, x1, y1, ..., x8, y8)."]
    box = [decoder.field_ids[f] for f in ("cls", "x1", "y1", "x2", "y2")]
    # Row 0 generates a valid (different) format, row 1 an invalid one (out of order).
    monkeypatch.setattr(decoder, "_generate_format", lambda *a, **k: [box, box[::-1]])
    formats = decoder._decode_format(embeds, texts)
    assert formats[0] == ("cls", "x1", "y1", "x2", "y2")
    assert formats[1] == ("cls",) + tuple(f"{a}{i}" for i in range(1, 9) for a in "xy")


def test_one_pass_format_generation_equals_step_by_step_greedy(tiny_llama_dir):
    """The grammar-constrained format generation read from one teacher-forced pass must make the
    same choices as feeding the chosen tokens back one at a time."""
    from visionllm.models.llm.parallel_decoding import prefix_allowed
    decoder = build_decoder(tiny_llama_dir, generate_format=True)
    with torch.no_grad():  # random new-token rows make some rows stop early, some late
        decoder.head.new_weight.normal_(0, 3.0)
    texts = ['Detect {"a": <c0>} in <image>. Answer as (c, x1, y1, x2, y2).'] * 6
    embeds = torch.randn(6, 3, 64) * 3
    fast = decoder._generate_format(embeds, texts)
    eos = decoder.prompt.end_of_response_id
    order = [decoder.field_ids[f] for f in ("cls",) + tuple(f"{a}{i}" for i in range(1, 17) for a in "xy")]
    for row in range(6):
        fed = [order[0]]
        stopped = False
        while len(fed) < len(order):
            batch = decoder._assemble([decoder._prompt_segments(texts[row], embeds[row]) + [(fed, False)]])
            mask = torch.zeros(batch.valid.shape[1], batch.valid.shape[1]).masked_fill(
                ~prefix_allowed(batch.valid)[0], float("-inf"))[None, None]
            with torch.no_grad():
                hidden = decoder.backbone(inputs_embeds=batch.embeds, attention_mask=mask,
                                          position_ids=batch.position_ids).last_hidden_state[0, -1]
            nxt = order[len(fed)]
            logit = decoder.head.subset_logits(hidden[None], torch.tensor([eos, nxt]))[0]
            if len(fed) >= 5 and len(fed) % 2 == 1 and logit[0] >= logit[1]:
                stopped = True
                break
            fed.append(nxt)
        assert fast[row] == (fed if stopped else None)


def test_contextual_class_logits_point_at_the_prompt_class_tokens(tiny_llama_dir):
    from visionllm.models.llm.parallel_decoding import parallel_forward
    decoder = build_decoder(tiny_llama_dir, num_slots=4)
    decoder.eval()
    names = ["cat", "dog", "cow"]
    instruction = "Detect every object of the categories " + format_category_set(names) + \
        " in <image>. Answer as a list of (c, x1, y1, x2, y2)."
    fields = ("cls", "x1", "y1", "x2", "y2")
    embeds = torch.randn(1, 4, decoder.hidden_size)
    with torch.no_grad():
        prefix = decoder._structured_prefix(embeds, [instruction], fields)
        prefix_hidden, group_hidden = parallel_forward(decoder.backbone, prefix, decoder._group_embeds(embeds, fields))
        context = decoder._class_context(prefix_hidden, prefix, 0, len(names))
        # each row is the prompt's state at the token <ci>, found independently by its text
        for i in range(len(names)):
            position = [t for t in range(prefix.input_ids.shape[1])
                        if prefix.input_ids[0, t] >= 0
                        and decoder.tokenizer.convert_ids_to_tokens(int(prefix.input_ids[0, t])) == f"<c{i}>"]
            assert len(position) == 1 and torch.equal(context[i], prefix_hidden[0, position[0]])
        # zero-initialised: the plain token readout; a trained pointer adds its score to the
        # class columns only (no-object and locations unchanged)
        plain = decoder._field_logits(group_hidden[0], len(names), None)
        plain_cls, plain_loc = plain.cls, plain.loc
        pointed = decoder._field_logits(group_hidden[0], len(names), context)
        cls, loc = pointed.cls, pointed.loc
        assert torch.equal(cls, plain_cls) and torch.equal(loc, plain_loc)
        pointer = decoder.class_pointer
        torch.nn.init.normal_(pointer.key.weight, std=0.1)
        cls = decoder._field_logits(group_hidden[0], len(names), context).cls

        def rms_normalised(x):
            return x / x.pow(2).mean(-1, keepdim=True).sqrt()

        slots = rms_normalised(group_hidden[0, :, 0].double()) @ pointer.query.weight.double().t()
        keys = rms_normalised(context.double()) @ pointer.key.weight.double().t()
        expected = slots @ keys.t() / pointer.query.weight.shape[0] ** 0.5
        assert torch.allclose((cls[:, :3] - plain_cls[:, :3]).double(), expected, atol=1e-4)
        assert torch.equal(cls[:, 3], plain_cls[:, 3])


def test_loss_targets_are_relative_to_the_matched_slot(tiny_llama_dir):
    """Each matched slot's location target is the codec encoding of its gt relative to ITS
    reference point: a slot whose reference sits on the object gets near-zero offsets."""
    decoder = build_decoder(tiny_llama_dir, num_slots=3)
    codec = LocationCodec(NUM_BINS)
    box = torch.tensor([[20.0, 16.0, 40.0, 48.0]])
    ref = torch.tensor([[0.375, 0.5]])  # the box centre of an 80 x 64 image
    bins = codec.encode(box.view(1, 2, 2), ref.unsqueeze(1), (80.0, 64.0))
    assert ((bins - NUM_BINS // 2).abs() <= 8).all()
    sample = make_sample("detection", 'Detect {"a": <c0>} in <image>. Answer as (c, x1, y1, x2, y2).',
                         categories=["a"], output_format=("cls", "x1", "y1", "x2", "y2"), bboxes=box, labels=[0])
    losses = decoder.loss(torch.randn(1, 3, 64), torch.rand(1, 3, 2), [sample])
    assert set(losses) == {"loss_format", "loss_cls", "loss_loc", "loss_loc_l1"} and all(v.isfinite() for v in losses.values())


def test_batched_generation_matches_single_generation(tiny_llama_dir):
    """Left padding + position ids from the mask: a prompt decodes the same alone or in a batch
    with a longer one."""
    decoder = build_decoder(tiny_llama_dir).eval()
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    embeds = torch.randn(2, 4, 64, generator=g)
    texts = ["<image> Caption.", "Answer the question about <image>: what colour is the large shape on the left?"]
    batched = decoder.generate_text(embeds, texts, max_new_tokens=6)
    single = [decoder.generate_text(embeds[i:i + 1], [texts[i]], max_new_tokens=6)[0] for i in range(2)]
    assert batched == single


def test_alpaca_prompt_style(tiny_llama_dir):
    decoder = build_decoder(tiny_llama_dir, prompt_style="alpaca", num_slots=2)
    before, after = decoder.prompt.encode("Describe <image> briefly.")
    text = decoder.tokenizer.decode(before + after)
    assert "### Instruction:\nDescribe " in text and text.endswith(" briefly.\n\n### Response:\n")
    assert "<|im_start|>" not in decoder.tokenizer.decode(after)
    sample = make_sample("caption", "Describe <image> briefly.", target_text="a square")
    losses = decoder.loss(torch.randn(1, 2, 64), torch.rand(1, 2, 2), [sample])
    assert set(losses) == {"loss_text"} and losses["loss_text"].isfinite()


def test_mmengine_init_weights_keeps_pretrained_llm(tiny_llama_dir):
    decoder = build_decoder(tiny_llama_dir)
    before = {k: v.clone() for k, v in decoder.llm.state_dict().items()}
    decoder.init_weights()
    assert all(torch.equal(before[k], v) for k, v in decoder.llm.state_dict().items())


def test_token_class_prior_picks_each_slots_label_across_passes(tiny_llama_dir):
    """A decisive prior on (token s, name t_s) makes slot s predict t_s, also when the names are
    split into passes (the prior is sliced by each pass's offset)."""
    g, names, decoder, text, embeds, refs = five_names_in_passes_of_two(tiny_llama_dir)
    for _ in range(2):  # the labels follow the prior, whichever names it picks
        targets = torch.randperm(5, generator=g)[:4]
        prior = torch.full((4, 5), -30.0)
        prior[torch.arange(4), targets] = 30.0
        sample = make_sample("detection", text, categories=names)
        merged = decoder.predict(embeds, refs, [sample], [prior])[0].pred_instances
        top = merged.scores.argsort(descending=True)[:4]
        assert (merged.scores[top] > 0.99).all()
        assert sorted(merged.labels[top].tolist()) == sorted((10 + targets).tolist())


def test_token_class_prior_enters_the_class_loss(tiny_llama_dir):
    """One object per slot, so every slot is matched: a prior that is the same on every slot then
    only moves the matched slots' class terms (unmatched slots would target no-object instead)."""
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    names = ["cat", "dog", "cow"]
    decoder = build_decoder(tiny_llama_dir, num_slots=4)
    text = "Detect " + format_category_set(names) + " in <image>. Answer as (c, x1, y1, x2, y2)."
    embeds, refs = torch.randn(1, 4, 64, generator=g), torch.rand(1, 4, 2, generator=g)
    boxes = torch.tensor([random_box(g, 80, 64) for _ in range(4)])
    sample = make_sample("detection", text, categories=names, output_format=("cls", "x1", "y1", "x2", "y2"),
                         bboxes=boxes, labels=torch.tensor([1, 1, 1, 1]))
    right, wrong = torch.full((4, 3), -5.0), torch.full((4, 3), -5.0)
    right[:, 1], wrong[:, 2] = 8.0, 8.0
    losses = {name: decoder.loss(embeds, refs, [sample], prior)["loss_cls"].item()
              for name, prior in (("right", [right]), ("none", None), ("wrong", [wrong]))}
    assert losses["right"] < losses["none"] < losses["wrong"]


def _giou_reference(a, b):
    """Generalised IoU of two (x1, y1, x2, y2) boxes, in float64 from the definition."""
    a, b = [float(v) for v in a], [float(v) for v in b]
    area = lambda x: max(x[2] - x[0], 0.0) * max(x[3] - x[1], 0.0)  # noqa: E731
    inter = area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])
    union = area(a) + area(b) - inter
    hull = area([min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])])
    return inter / union - (hull - union) / hull


def test_giou_loss_is_one_minus_giou_of_the_expected_box(tiny_llama_dir, monkeypatch):
    import visionllm.models.llm.criterion as criterion_module
    decoder = build_decoder(tiny_llama_dir, num_slots=1, generate_format=False,
                            loss_weights=dict(giou=1.0)).eval()
    box = torch.tensor([[20.0, 16.0, 40.0, 48.0]])
    sample = make_sample("detection", 'Detect {"a": <c0>} in <image>. Answer as (c, x1, y1, x2, y2).',
                         categories=["a"], output_format=("cls", "x1", "y1", "x2", "y2"), bboxes=box, labels=[0])
    embeds, refs = torch.randn(1, 3, 64), torch.rand(1, 3, 2)
    seen = []
    original = criterion_module.generalized_box_iou_loss
    monkeypatch.setattr(criterion_module, "generalized_box_iou_loss",
                        lambda pred, gt, **kw: seen.append((pred.detach(), gt)) or original(pred, gt, **kw))
    losses = decoder.loss(embeds, refs, [sample])
    assert set(losses) == {"loss_format", "loss_cls", "loss_loc", "loss_loc_l1", "loss_giou"}
    (pred_box, gt_box), = seen
    assert torch.equal(gt_box[0], box[0])
    # the one slot is matched to the one box, and its box is the one prediction decodes
    # (which then clips it to the image)
    predicted = decoder.predict(embeds, refs, [sample])[0].pred_instances.bboxes[0]
    h, w = sample.img_shape
    assert torch.allclose(predicted, pred_box[0].clamp(min=0).minimum(torch.tensor([w, h, w, h])), atol=1e-4)
    expected = 1.0 - _giou_reference(pred_box[0], box[0])
    assert abs(losses["loss_giou"].item() - expected) < 1e-4
    # the term trains the decoder
    losses["loss_giou"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters() if p.requires_grad)
    # off by default
    plain = build_decoder(tiny_llama_dir, num_slots=1)
    assert "loss_giou" not in plain.loss(embeds, refs, [sample])
    with pytest.raises(ValueError, match="unknown loss weights"):
        build_decoder(tiny_llama_dir, loss_weights=dict(gio=1.0))


def test_grounding_can_pick_its_box_by_the_alignment_alone(tiny_llama_dir):
    decoder = build_decoder(tiny_llama_dir, num_slots=3, generate_format=False).eval()
    sample = make_sample("grounding", 'Find "the big square" in <image> and give (c, x1, y1, x2, y2).',
                         categories=["the big square"], output_format=("cls", "x1", "y1", "x2", "y2"))
    embeds, refs = torch.randn(1, 3, 64), torch.rand(1, 3, 2)

    def answer(prior):
        priors = None if prior is None else [torch.tensor(prior).view(3, 1)]
        pred = decoder.predict(embeds, refs, [sample], priors)[0].pred_instances
        return pred.bboxes[0], pred.scores[0]

    first, score = answer([5.0, -5.0, -5.0])
    assert len(first) == 4 and score == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())
    last, _ = answer([-5.0, -5.0, 5.0])
    assert not torch.allclose(first, last)  # another slot, another box
    # the box is the one that slot decodes: whatever the LLM's class logits, the prior alone decides
    with torch.no_grad():
        decoder.class_pointer.key.weight.normal_(0, 3.0)
    assert torch.equal(answer([5.0, -5.0, -5.0])[0], first)
    # without a prior the class probability decides (a softmax probability, not the prior's sigmoid)
    _, plain_score = answer(None)
    assert 0 < plain_score <= 1 and plain_score != pytest.approx(score)


def test_polygon_refinement_loss_is_the_outline_distance(tiny_llama_dir, monkeypatch):
    """At the start the refinement returns the decoded polygon, so its term is exactly the
    outline distance between the expected polygon and the true one."""
    import visionllm.models.llm.task_decoder as task_decoder_module
    from visionllm.models.refinement import outline_distance

    g = torch.Generator().manual_seed(11)
    width, levels = 16, 1
    decoder = build_decoder(tiny_llama_dir, num_slots=1, generate_format=False,
                            polygon_refinement=dict(type="PolygonRefinement", embed_dims=width, num_levels=levels, num_layers=2,
                                                    ffn_dims=32)).eval()
    h, w = IMG_SHAPE
    polygon = random_polygon(g, w, h, NUM_POINTS)
    fields = ("cls",) + tuple(f"{a}{i}" for i in range(1, NUM_POINTS + 1) for a in "xy")
    sample = make_sample("segmentation", 'Segment all {"circle": <c0>} in <image> as (c, x1, y1, ..., x8, y8).',
                         categories=["circle"], output_format=fields,
                         bboxes=[torch.cat([polygon.min(0).values, polygon.max(0).values]).tolist()],
                         labels=[0], polygons=polygon[None], img_shape=IMG_SHAPE, scale_factor=SCALE)
    embeds, refs = torch.randn(1, 3, 64, generator=g), torch.rand(1, 3, 2, generator=g)
    features = dict(tokens=torch.randn(1, 3, width, generator=g), memory=torch.randn(1, 6 * 5, width, generator=g),
                    spatial_shapes=torch.tensor([[6, 5]]), level_start_index=torch.tensor([0]),
                    padding_mask=torch.zeros(1, 30, dtype=torch.bool), valid_ratios=torch.ones(1, levels, 2))
    decoded = []
    original = task_decoder_module.LLMTaskDecoder._refine
    monkeypatch.setattr(task_decoder_module.LLMTaskDecoder, "_refine",
                        lambda self, f, row, slots, points, img_wh: decoded.append(points.detach())
                        or original(self, f, row, slots, points, img_wh))
    losses = decoder.loss(embeds, refs, [sample], image_features=features)
    with pytest.raises(ValueError, match="image features"):
        decoder.loss(embeds, refs, [sample])
    (points,), size = decoded, torch.tensor([w, h], dtype=torch.float32)
    pred, true = (points / size).clamp(1e-4, 1 - 1e-4), polygon[None] / size
    expected_outline = outline_distance(pred.double(), true.double()).item()
    assert abs(losses["loss_refine_polygon"].item() - decoder.loss_weights["refine_polygon"] * expected_outline) < 1e-5
    assert "loss_refine_l1" not in losses  # the box terms belong to box formats
    losses["loss_refine_polygon"].backward()
    last = decoder.polygon_refinement.deltas[1][-1].weight
    assert last.grad is not None and last.grad.abs().sum() > 0


def test_slot_pass_continuing_the_prompt_cache_equals_reading_the_prompt_again(tiny_llama_dir):
    """Structured inference continuing a pass's key/value cache gives the outputs of reading prompt
    and format again (prompts of different lengths, generated and parsed formats, a category set
    in passes)."""
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    decoder = build_decoder(tiny_llama_dir, num_slots=4, max_classes_per_pass=2,
                            generate_format=True).eval()
    with torch.no_grad():  # random new-token rows and pointer: formats and class contexts matter
        decoder.head.new_weight.normal_(0, 3.0, generator=g)
        decoder.class_pointer.key.weight.normal_(0, 0.1, generator=g)
    names = ["cat", "dog", "cow", "owl", "fox"]
    polygon = ("cls",) + tuple(f"{a}{i}" for i in range(1, 9) for a in "xy")
    samples = [
        make_sample("detection", "Detect " + format_category_set(names) + " in <image>. Answer as (c, x1, y1, x2, y2).",
                    categories=names, scale_factor=SCALE),
        make_sample("segmentation", 'Segment {"circle": <c0>} in <image> as (c, x1, y1, ..., x8, y8).',
                    categories=["circle"], output_format=polygon, scale_factor=SCALE),
        make_sample("grounding", 'Find "the big square" in <image> and give (c, x1, y1, x2, y2).',
                    categories=["the big square"]),
    ]
    embeds, refs = torch.randn(3, 4, 64, generator=g), torch.rand(3, 4, 2, generator=g)
    # The cached path continues a pass's key/value cache (a drafted slot pass or a format pass);
    # whether that reads fewer positions depends on how often the stated formats are confirmed,
    # which a random decoder decides (tests/models/llm/test_prompt_read_once.py counts passes).
    continued = []
    for name in ("_drafted_pass", "_cached_groups"):
        original = getattr(decoder, name)
        setattr(decoder, name, lambda *a, _f=original, _n=name, **k: continued.append(_n) or _f(*a, **k))
    outputs = {}
    for reuse in (False, True):
        decoder.reuse_prompt_cache = reuse
        continued.clear()
        outputs[reuse] = [s.pred_instances for s in decoder.predict(embeds, refs, [s.clone() for s in samples])]
        outputs[reuse, "continued"] = list(continued)
    assert outputs[False, "continued"] == [] and outputs[True, "continued"]  # the cached path really ran
    for plain, cached in zip(outputs[False], outputs[True]):
        assert torch.equal(plain.labels, cached.labels)
        assert torch.allclose(plain.scores, cached.scores, atol=1e-5)
        assert torch.allclose(plain.bboxes, cached.bboxes, atol=1e-3)
        if "polygons" in plain:
            assert torch.allclose(plain.polygons, cached.polygons, atol=1e-3)
    # The slot hidden states themselves, against one pass over prompt + format + groups.
    texts, fields = [s.instruction for s in samples[1:]], ("cls", "x1", "y1", "x2", "y2")
    with torch.no_grad():
        state = {}
        decoder._generate_format(embeds[1:], texts, state)
        _, _, cached = decoder._cached_groups(state["cache"], [0, 1], embeds[1:], fields)
        prefix = decoder._structured_prefix(embeds[1:], texts, fields)
        _, plain = decoder._run_groups(prefix, decoder._group_embeds(embeds[1:], fields), "parallel")
    assert torch.allclose(cached, plain, atol=1e-5)


def test_a_refinement_needs_the_width_and_levels_of_the_tokenizer_memory(tiny_llama_dir):
    with pytest.raises(ValueError, match="box_refinement reads the image tokenizer's memory"):
        build_decoder(tiny_llama_dir, box_refinement=dict(type="BoxRefinement"))
    decoder = build_decoder(tiny_llama_dir, box_refinement=dict(type="BoxRefinement", num_layers=1),
                            image_dims=16, image_levels=2)
    assert decoder.box_refinement.attns[0].embed_dims == 16 and decoder.box_refinement.attns[0].num_levels == 2
    assert decoder.polygon_refinement is None  # None leaves a part out


def _greedy_by_hand(decoder, embeds, text, max_new_tokens):
    """Greedy decoding written out step by step in float64: the full sequence re-read at every
    step, the added tokens suppressed; (tokens, log-probability, the end of the response counted)."""
    eos = decoder.prompt.end_of_response_id
    with torch.no_grad(), decoder._reading(embeds[None]):
        sequence = decoder._assemble([decoder._prompt_segments(text, embeds)]).embeds
        tokens, log_probability = [], 0.0
        for _ in range(max_new_tokens):
            logits = decoder.llm(inputs_embeds=sequence).logits[0, -1].double()
            logits[decoder.new_token_ids] = float("-inf")
            step = logits.log_softmax(-1)
            token = int(step.argmax())
            tokens.append(token)
            log_probability += float(step[token])
            if token == eos:
                break
            sequence = torch.cat([sequence, decoder.embed_tokens(torch.tensor([[token]]))], dim=1)
    return tokens, log_probability


def test_generated_texts_carry_the_probability_of_their_tokens(tiny_llama_dir, trained):
    """Each text's probability against a greedy decode written out by hand: texts cut at the
    token limit (a random model) and texts that end (the fitted caption)."""
    decoder = build_decoder(tiny_llama_dir).eval()
    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    embeds = torch.randn(2, 4, 64, generator=g)
    texts = ["<image> Caption.", "Answer the question about <image>: what colour is the large shape on the left?"]
    cases = [(decoder, embeds, texts, 6), (trained["decoder"], trained["embeds"][3:], [trained["samples"][3].instruction], 8)]
    for model, image_embeds, instructions, limit in cases:
        generated = model.generate_text(image_embeds, instructions, max_new_tokens=limit)
        assert generated == [text for text in generated]  # still a list of str for every caller
        for i, text in enumerate(instructions):
            tokens, log_probability = _greedy_by_hand(model, image_embeds[i], text, limit)
            assert generated[i] == model.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            assert generated.probabilities[i] == pytest.approx(math.exp(log_probability), rel=1e-4)
            assert 0.0 < generated.probabilities[i] < 1.0
    assert tokens[-1] == trained["decoder"].prompt.end_of_response_id and generated[0] == "two red circles"
