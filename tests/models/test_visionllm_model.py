"""The whole model on tiny parts: losses, gradients, predictions for every task, checkpoints."""
import re

import pytest
import torch
from mmengine.dataset import pseudo_collate

from tiny_model import build_tiny_model as _build
from tiny_model import one_sample_per_task
from visionllm.tasks import get_task

pytestmark = pytest.mark.slow  # the whole tiny model


def test_loss_backward_and_predict_every_task(tmp_path, monkeypatch, tiny_llm_dir, tiny_workspace):  # noqa: F811
    cfg, model, train_set, test_set = _build(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch)
    by_task = {}
    five = {"detection", "segmentation", "grounding", "caption", "vqa"}
    for i in range(len(train_set)):
        sample = train_set[i]
        if sample["data_samples"].task in five:
            by_task.setdefault(sample["data_samples"].task, sample)
        if len(by_task) == 5:
            break
    assert set(by_task) == {"detection", "segmentation", "grounding", "caption", "vqa"}
    # the question points at a region (an input any text task may carry: the region read-out trains)
    question = by_task["vqa"]["data_samples"]
    h, w = question.img_shape
    question.set_metainfo(dict(instruction=question.instruction.replace("<image>", "<image> Look at <region>."),
                               regions=[[0.0, 0.0, w / 2, h / 2]]))
    model.train()
    data = model.data_preprocessor(pseudo_collate(list(by_task.values())), True)
    losses = model(**data, mode="loss")
    for key in ("loss_cls", "loss_loc", "loss_loc_l1", "loss_format", "loss_text", "loss_tok_obj", "loss_tok_ref",
                "loss_tok_cls"):
        assert key in losses and torch.isfinite(losses[key]), key
    total = sum(v for k, v in losses.items() if "loss" in k)
    total.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    disconnected = [n for n, p in trainable.items() if p.grad is None]
    assert not disconnected, f"parameters outside the loss graph: {disconnected[:5]}"
    # Zero at initialisation by design: LoRA's A (B starts at 0) and what only reaches the output
    # through the zero-initialised sampling offsets / attention weights of deformable attention,
    # the class pointer's query (its key starts at zero so that the pointer starts silent), and
    # what lies upstream of the zero-initialised output layers of the optional parts (those
    # output layers themselves must get a gradient).
    zero_by_design = re.compile(r"lora_A|level_embed|class_pointer\.query"
                                r"|image_readout\.blocks\.\d+\.(?!out\.)"
                                # side_proj reads the side weights, which start at zero
                                r"|relational_alignment\.(?!out\.1\.|name_sides|word_sides\.2\.)"
                                r"|_refinement\.(?!deltas\.\d+\.2\.)")
    dead = [n for n, p in trainable.items() if not torch.any(p.grad != 0) and not zero_by_design.search(n)]
    assert not dead, f"parameters with an all-zero gradient: {dead[:5]}"
    for part in ("image_tokenizer.backbone", "image_tokenizer.text_encoder", "image_tokenizer.fusion",
                 "image_tokenizer.transformer", "token_projection", "lora_B"):
        assert any(part in n for n in trainable), f"nothing trainable in {part}"

    model.eval()
    # The untrained decoder would emit format tokens of its own choosing; read the format from
    # the instruction here (format generation has its own tests).
    model.task_decoder.generate_format = False
    firsts = {}
    for i in range(len(test_set)):
        firsts.setdefault(test_set[i]["data_samples"].task, test_set[i])
    data = model.data_preprocessor(pseudo_collate(list(firsts.values())), False)
    with torch.no_grad():
        results = model(**data, mode="predict")
    for sample in results:
        ori_h, ori_w = sample.ori_shape
        if not get_task(sample.task).structured:  # caption, VQA and the region tasks answer in words
            assert isinstance(sample.pred_text, str)
            continue
        pred = sample.pred_instances
        assert pred.bboxes.shape[1] == 4 and len(pred.scores) == len(pred.bboxes)
        assert (pred.bboxes[:, 0::2] <= ori_w).all() and (pred.bboxes[:, 1::2] <= ori_h).all()
        if sample.task == "grounding":
            assert len(pred.bboxes) == 1
        if sample.task == "segmentation":
            assert pred.masks.shape[1:] == (ori_h, ori_w) and pred.polygons.shape[1] == 16


def test_checkpoint_holds_only_trained_weights_and_restores_predictions(tmp_path, monkeypatch, tiny_llm_dir,  # noqa: F811
                                                                       tiny_workspace):  # noqa: F811
    from visionllm.engine.checkpoint import load_trained_checkpoint
    cfg, model, _, test_set = _build(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch)
    with torch.no_grad():  # make every trained part differ from a fresh build
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.01)
    dropped = set(model.frozen_pretrained_keys())
    assert dropped and all(not k.endswith("lora_A.default.weight") for k in dropped)
    state = {k: v for k, v in model.state_dict().items() if k not in dropped}
    path = tmp_path / "ckpt.pth"
    torch.save(dict(state_dict=state), path)
    model.eval()
    data = model.data_preprocessor(pseudo_collate([test_set[0], test_set[1]]), False)
    with torch.no_grad():
        expected = model(**data, mode="predict")
    _, fresh, _, _ = _build(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch)
    load_trained_checkpoint(fresh, str(path))
    fresh.eval()
    with torch.no_grad():
        got = fresh(**data, mode="predict")
    for a, b in zip(expected, got):
        torch.testing.assert_close(a.pred_instances.bboxes, b.pred_instances.bboxes, rtol=0, atol=0)
        torch.testing.assert_close(a.pred_instances.scores, b.pred_instances.scores, rtol=0, atol=0)


def test_token_class_prior_reaches_the_decoder(tmp_path, monkeypatch, tiny_llm_dir, tiny_workspace):  # noqa: F811
    """The tokenizer's token-to-name logits are computed once per forward (and reused by
    loss_tok_cls) and change the decoder's class scores."""
    cfg, model, _, test_set = _build(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch)
    model.eval()
    model.task_decoder.generate_format = False
    with torch.no_grad():
        model.image_tokenizer.name_bias.fill_(3.0)  # a prior far from the init's near-constant -4.6
        model.image_tokenizer.name_query.weight.normal_(0, 1.0)
    item = next(test_set[i] for i in range(len(test_set)) if test_set[i]["data_samples"].task == "detection")
    data = model.data_preprocessor(pseudo_collate([item]), False)
    with torch.no_grad():
        outputs = model(**data, mode="tensor")
        priors = outputs["class_priors"]
        num_names = len(data["data_samples"][0].categories)
        assert priors is not None and priors[0].shape == (outputs["embeds"].shape[1], num_names)
        with_prior = model(**data, mode="predict")[0].pred_instances.scores.clone()
        tokenizer = model.image_tokenizer
        tokenizer.token_name_logits = lambda outputs, samples: [None] * len(samples)
        try:
            without = model(**data, mode="predict")[0].pred_instances.scores
        finally:
            del tokenizer.token_name_logits
    assert len(with_prior) != len(without) or not torch.allclose(with_prior.sort().values, without.sort().values)


def test_instruction_relevance_flags_the_tokens_a_question_is_about(tmp_path, monkeypatch, tiny_llm_dir,  # noqa: F811
                                                                    tiny_workspace):  # noqa: F811
    """Text tasks: each token's LLM input gains the relevance vector weighted by the sigmoid of
    the token's alignment with the instruction (checked against a hand-pooled reference); box
    tasks are left alone; the vector starts at zero; the answer loss trains the alignment."""
    cfg, model, train_set, _ = _build(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch)
    vector = model.instruction_relevance.embedding
    vqa_item, detection_item = one_sample_per_task(train_set, ["vqa", "detection"])
    data = model.data_preprocessor(pseudo_collate([vqa_item, detection_item]), True)
    tokenizer = model.image_tokenizer
    with torch.no_grad():
        tokenizer.name_query.weight.normal_(0, 1.0)
        tokenizer.name_bias.fill_(0.0)  # logits near zero: sigmoid in its sensitive range
        outputs = model(**data, mode="tensor")
        plain = model.token_projection(outputs["embeds"])
        torch.testing.assert_close(outputs["llm_embeds"], plain, rtol=0, atol=0)  # zero vector: no change

        vector.normal_(0, 1.0)
        shifted = model(**data, mode="tensor")["llm_embeds"] - plain
        # Reference: the text encoder's features of the question text, averaged by hand.
        question = data["data_samples"][0].instruction.replace("<image>", " ")
        feats, padding = tokenizer.text_encoder([question])
        pooled = feats[0][~padding[0]].mean(0)
        logits = tokenizer.name_query(outputs["embeds"][0]) @ pooled / outputs["embeds"].shape[-1] ** 0.5
        expected = logits.sigmoid()[:, None] * vector
    torch.testing.assert_close(shifted[0], expected, rtol=1e-5, atol=1e-5)
    assert logits.std() > 0.1  # the weights differ from token to token
    assert shifted[1].abs().max() == 0  # the detection sample is untouched

    def alignment_grad(vector_scale):
        model.zero_grad()
        with torch.no_grad():
            vector.mul_(vector_scale)
        question_only = model.data_preprocessor(pseudo_collate([vqa_item]), True)
        losses = model(**question_only, mode="loss")
        losses["loss_text"].backward()
        grad = tokenizer.name_query.weight.grad
        return 0.0 if grad is None else float(grad.abs().max())

    assert alignment_grad(1.0) > 0  # the answer's loss reaches the alignment through the vector
    assert alignment_grad(0.0) == 0  # and only through it


def test_refinements_and_relational_alignment_in_the_whole_model(tmp_path, monkeypatch, tiny_llm_dir,  # noqa: F811
                                                                  tiny_workspace):  # noqa: F811
    """All three train from the model's losses; the refinements read the tokenizer's own memory
    (their width and levels filled in by VisionLLM); the box refinement moves decoded boxes and
    never polygons, the polygon refinement polygons and never boxes."""
    cfg, model, train_set, test_set = _build(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch,
                                             tokenizer_options=dict(relational_alignment=dict(
                                                 type="RelationalAlignment", num_layers=1)),
                                             decoder_options=dict(
                                                 box_refinement=dict(type="BoxRefinement", num_layers=1),
                                                 polygon_refinement=dict(type="PolygonRefinement", num_layers=1)))
    boxes_refinement = model.task_decoder.box_refinement
    polygons_refinement = model.task_decoder.polygon_refinement
    for refinement in (boxes_refinement, polygons_refinement):
        assert refinement.attns[0].embed_dims == model.image_tokenizer.embed_dims
        assert refinement.attns[0].num_levels == model.image_tokenizer.backbone.num_levels
    model.train()
    data = model.data_preprocessor(
        pseudo_collate(one_sample_per_task(train_set, ["detection", "grounding", "segmentation"])), True)
    losses = model(**data, mode="loss")
    assert {"loss_refine_l1", "loss_refine_giou", "loss_refine_polygon"} <= set(losses)
    sum(v for k, v in losses.items() if "loss" in k).backward()
    # the zero-initialised output layers get a gradient, so all three start to learn
    for prefix in ("task_decoder.box_refinement.deltas.0.2", "task_decoder.polygon_refinement.deltas.0.2",
                   "image_tokenizer.relational_alignment.out.1"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), prefix

    model.eval()
    model.task_decoder.generate_format = False
    data = model.data_preprocessor(pseudo_collate(one_sample_per_task(test_set, ["detection", "segmentation"])), False)

    def predict():
        with torch.no_grad():
            det, seg = model(**data, mode="predict")
        return det.pred_instances.bboxes.clone(), seg.pred_instances.polygons.clone()

    boxes, polygons = predict()
    for delta in boxes_refinement.deltas:
        torch.nn.init.normal_(delta[-1].weight, std=1.0)
    moved_boxes, same_polygons = predict()
    assert not torch.allclose(moved_boxes, boxes, atol=1e-2)
    assert torch.equal(same_polygons, polygons)
    for delta in polygons_refinement.deltas:
        torch.nn.init.normal_(delta[-1].weight, std=1.0)
    same_boxes, moved_polygons = predict()
    assert torch.equal(same_boxes, moved_boxes)
    assert not torch.allclose(moved_polygons, polygons, atol=1e-2)
