"""RegionRelations: the side read from the words flips exactly with the mirrored words, the folded
order lands on the last word of two-region instructions only, it adds nothing until trained, and
it learns relation answers for every wording, the mirrored images' included."""
from types import SimpleNamespace

import pytest
import torch

from fresh_seed import seed_and_generator
from tiny_llm import make_sample
from tiny_model import TINY_TEXT_ENCODER
from visionllm.instructions.mirror_words import swap_left_right, swap_top_bottom
from visionllm.instructions.words import word_spans
from visionllm.models.image_tokenizer.text_encoder import TextEncoder
from visionllm.models.region_relations import RegionRelations

pytestmark = pytest.mark.usefixtures("single_thread")

HIDDEN = 8
# relation wording -> (axis, sign of the last region's centre minus the first's when the answer is yes)
RELATIONS = {"<image> Is <region> left of <region>?": (0, 1), "<image> Is <region> to the right of <region>?": (0, -1),
             "<image> Is <region> above <region>?": (1, 1), "<image> Is <region> below <region>?": (1, -1),
             "<image> Is <region> at the top compared with <region>?": (1, 1)}


@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(0)
    overrides = dict(TINY_TEXT_ENCODER["config_overrides"])
    return SimpleNamespace(text_encoder=TextEncoder(embed_dims=32, pretrained=False, config_overrides=overrides).eval())


def randomised(generator):
    module = RegionRelations(HIDDEN, text_dims=32)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return module


def region_sample(instruction, regions, img_shape=(100, 100)):
    sample = make_sample("vqa", instruction, img_shape=img_shape)
    sample.set_metainfo(dict(regions=regions))
    return sample


def test_the_side_flips_sign_exactly_when_its_axis_words_are_mirrored(tokenizer):
    seed, g = seed_and_generator()
    module = randomised(g)
    questions = list(RELATIONS) + ["<image> Is <region> the same colour as <region>?"]
    with torch.no_grad():
        sides = module.sides(tokenizer.text_encoder, questions)
        x_mirrored = module.sides(tokenizer.text_encoder, [swap_left_right(q) for q in questions])
        y_mirrored = module.sides(tokenizer.text_encoder, [swap_top_bottom(q) for q in questions])
    for q, side, x, y in zip(questions, sides, x_mirrored, y_mirrored):
        names_x = swap_left_right(q) != q
        names_y = swap_top_bottom(q) != q
        if names_x:
            torch.testing.assert_close(x[0], -side[0], atol=1e-5, rtol=0, msg=f"{q} seed {seed}")
            assert side[0].abs() > 1e-3, f"{q} seed {seed}"  # not zero by accident
        else:
            assert side[0] == 0, f"{q}: no left/right word, yet a side (seed {seed})"
        if names_y:
            torch.testing.assert_close(y[1], -side[1], atol=1e-5, rtol=0, msg=f"{q} seed {seed}")
            assert side[1].abs() > 1e-3, f"{q} seed {seed}"
        else:
            assert side[1] == 0, f"{q}: no above/below word, yet a side (seed {seed})"


def test_the_vector_lands_on_the_last_word_of_two_region_instructions_only(tokenizer):
    seed, g = seed_and_generator()
    module = randomised(g)
    two = "<image> Is <region> left of <region>?"
    free = make_sample("vqa", "<image> How many stars are there?")
    one = region_sample("<image> What colour is <region>?", [[10, 10, 30, 30]])
    plain = region_sample(two, [[10, 10, 30, 30], [60, 50, 90, 80]])
    earlier = torch.randn(len(word_spans(two)), HIDDEN, generator=g)
    stacked = region_sample(two, [[10, 10, 30, 30], [60, 50, 90, 80]])
    stacked.referent_embeds = earlier.clone()
    with torch.no_grad():
        module(tokenizer, [free, one, plain, stacked], torch.float64)
    assert "referent_embeds" not in free and "referent_embeds" not in one
    vectors = plain.referent_embeds
    assert vectors.shape == (len(word_spans(two)), HIDDEN) and vectors.dtype == torch.float64
    assert torch.count_nonzero(vectors[:-1]) == 0 and vectors[-1].abs().sum() > 0
    # reference: out(order * side), order = sign of the last centre minus the first
    side = module.sides(tokenizer.text_encoder, [two])[0]
    expected = module.out(torch.tensor([1.0, 1.0]) * side)
    torch.testing.assert_close(vectors[-1].float(), expected, msg=f"seed {seed}")
    # another part's vectors keep theirs, the folded order is added to the last row
    torch.testing.assert_close(stacked.referent_embeds, earlier.double() + vectors)


def test_an_untrained_module_adds_exactly_zero(tokenizer):
    module = RegionRelations(HIDDEN, text_dims=32)
    module.init_weights()
    sample = region_sample("<image> Is <region> above <region>?", [[10, 10, 30, 30], [60, 50, 90, 80]])
    module(tokenizer, [sample])
    assert torch.count_nonzero(sample.referent_embeds) == 0


def test_bad_regions_are_one_clear_error(tokenizer):
    module = RegionRelations(HIDDEN, text_dims=32)
    sample = region_sample("<image> Is <region> above <region>?", [[10, 10, 30, 30]])
    with pytest.raises(Exception, match="region"):
        module(tokenizer, [sample])


def relation_batch(generator, count):
    """Random two-region questions of every wording with their yes / no answers; the boxes'
    centres at least 10 % of the image apart on the asked axis (the shapes data's margin)."""
    samples, answers = [], []
    wordings = list(RELATIONS)
    for k in range(count):
        question = wordings[k % len(wordings)]
        axis, sign = RELATIONS[question]
        while True:
            centres = torch.rand(2, 2, generator=generator) * 80 + 10
            if (centres[1, axis] - centres[0, axis]).abs() > 10:
                break
        boxes = torch.cat([centres - 5, centres + 5], dim=1).tolist()
        samples.append(region_sample(question, boxes))
        answers.append(float(torch.sign(centres[1, axis] - centres[0, axis]) == sign))
    return samples, torch.tensor(answers)


def test_it_learns_every_wording_of_the_relation_questions(tokenizer):
    """A fixed random read-out of the last-word vector answers yes / no; training the module alone
    on random boxes gets every wording right on new boxes."""
    seed, g = seed_and_generator()
    torch.manual_seed(seed)
    module = RegionRelations(HIDDEN, text_dims=32)
    module.init_weights()
    readout = torch.randn(HIDDEN, generator=g)

    def scores(samples):
        module(tokenizer, samples)
        return torch.stack([s.referent_embeds[-1] @ readout for s in samples]) * 20

    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(150):
        samples, answers = relation_batch(g, 20)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(scores(samples), answers)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    samples, answers = relation_batch(g, 100)
    with torch.no_grad():
        right = ((scores(samples) > 0).float() == answers).float().mean().item()
    assert right == 1.0, f"{right:.2f} right after training (seed {seed})"


@pytest.mark.slow
def test_whole_model_unchanged_until_trained_and_the_answer_trains_it(tmp_path, monkeypatch, tiny_llm_dir,
                                                                       tiny_workspace):
    from tiny_model import build_tiny_model
    _, model, _, _ = build_tiny_model(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch,
                                      region_relations=dict(type="RegionRelations"))
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 255, (3, 64, 96), generator=g, dtype=torch.uint8)

    def batch(instruction, regions):
        sample = make_sample("vqa", instruction, target_text="yes", img_shape=(64, 96))
        sample.set_metainfo(dict(regions=regions, pad_shape=(64, 96)))
        return model.data_preprocessor(dict(inputs=[image], data_samples=[sample]), True)

    two = ("<image> Is <region> left of <region>?", [[4.0, 4.0, 20.0, 20.0], [60.0, 30.0, 90.0, 60.0]])
    one = ("<image> What colour is <region>?", [[4.0, 4.0, 20.0, 20.0]])
    model.train()

    def text_loss(case):
        return model(**batch(*case), mode="loss")["loss_text"]

    relations = model.region_relations
    with torch.no_grad():
        start_two, start_one = text_loss(two), text_loss(one)
        model.region_relations = None
        try:
            assert torch.equal(text_loss(two), start_two)  # zero-initialised: exactly the model without it
        finally:
            model.region_relations = relations
        relations.side[-1].weight.normal_(0, 0.5, generator=g)
        assert (text_loss(two) - start_two).abs() > 1e-6  # the folded order reaches the answer
        assert torch.equal(text_loss(one), start_one)  # one region: nothing added
    model.zero_grad()
    text_loss(two).backward()
    assert relations.side[0].weight.grad.abs().sum() > 0 and relations.out.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        predicted = model(**batch(*two), mode="predict")
    assert "referent_embeds" not in predicted[0]
