"""RegionAppearance: the map of the image token nearest a one-region instruction's region lands on
its last word (against a reference), nothing else gets a vector, it adds nothing until trained, and
trained alone it lets a fixed read-out of the last word name what the region looks like."""
import pytest
import torch

from fresh_seed import seed_and_generator
from tiny_llm import make_sample
from visionllm.instructions.words import word_spans
from visionllm.models.region_appearance import RegionAppearance

pytestmark = pytest.mark.usefixtures("single_thread")

HIDDEN = 12
DIMS = 10
TOKENS = 7


def randomised(generator):
    module = RegionAppearance(DIMS, HIDDEN, mid_dims=16)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return module


def region_sample(instruction, regions, img_shape=(100, 200)):
    sample = make_sample("vqa", instruction, img_shape=img_shape)
    sample.set_metainfo(dict(regions=regions))
    return sample


def reference_map(module, x):
    """relu(x W1^T + b1) W2^T in float64, from the module's weights."""
    first, last = module.map[0], module.map[-1]
    hidden = torch.relu(x.double() @ first.weight.double().T + first.bias.double())
    return hidden @ last.weight.double().T


def nearest_in_pixels(points, box, img_shape):
    """The token whose reference point, in pixels, lies nearest the box centre (a plain loop)."""
    h, w = img_shape
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    distances = [((float(x) * w - cx) / w) ** 2 + ((float(y) * h - cy) / h) ** 2 for x, y in points]
    return min(range(len(distances)), key=distances.__getitem__)


def test_the_token_nearest_the_region_lands_on_the_last_word_of_one_region_instructions_only():
    seed, g = seed_and_generator()
    module = randomised(g)
    question = "<image> What colour is <region>?"
    box = [120.0, 10.0, 180.0, 50.0]
    free = make_sample("vqa", "<image> How many stars are there?")
    one = region_sample(question, [box])
    two = region_sample("<image> Is <region> left of <region>?", [[10, 10, 30, 30], [60, 50, 90, 80]])
    stacked = region_sample(question, [box])
    earlier = torch.randn(len(word_spans(question)), HIDDEN, generator=g)
    stacked.referent_embeds = earlier.clone()
    samples = [free, one, two, stacked]
    tokens = torch.randn(len(samples), TOKENS, DIMS, generator=g)
    points = torch.rand(len(samples), TOKENS, 2, generator=g)
    with torch.no_grad():
        module(tokens, points, samples, torch.float64)
    for sample in (free, two):
        assert "referent_embeds" not in sample
    vectors = one.referent_embeds
    assert vectors.shape == (len(word_spans(question)), HIDDEN) and vectors.dtype == torch.float64
    assert torch.count_nonzero(vectors[:-1]) == 0
    j = nearest_in_pixels(points[1], box, (100, 200))
    torch.testing.assert_close(vectors[-1], reference_map(module, tokens[1, j]), rtol=1e-5, atol=1e-6,
                               msg=f"seed {seed}")
    # another part's vectors keep theirs; the appearance of its own nearest token is added to the last row
    j = nearest_in_pixels(points[3], box, (100, 200))
    expected = earlier.double().clone()
    expected[-1] += reference_map(module, tokens[3, j])
    torch.testing.assert_close(stacked.referent_embeds, expected, rtol=1e-5, atol=1e-6)


def test_an_untrained_module_adds_exactly_zero():
    _, g = seed_and_generator()
    module = RegionAppearance(DIMS, HIDDEN)
    sample = region_sample("<image> Describe <region>.", [[10, 10, 30, 30]])
    module(torch.randn(1, TOKENS, DIMS, generator=g), torch.rand(1, TOKENS, 2, generator=g), [sample])
    assert torch.count_nonzero(sample.referent_embeds) == 0


def test_trained_alone_it_names_the_appearance_of_new_regions():
    """Each image token is one of five appearance prototypes plus noise, at a random place; a fixed
    random read-out of the last-word vector picks one of five words. Training the module alone
    (from its zero start) names the appearance of the token at every new region right."""
    seed, g = seed_and_generator()
    torch.manual_seed(seed)
    module = RegionAppearance(DIMS, HIDDEN, mid_dims=16)
    # Orthogonal prototypes 4.2 apart against noise of norm ~0.95: every token is unambiguous (random
    # prototypes can lie ~2 apart, where the noise alone misnames a few tokens).
    prototypes = 3.0 * torch.linalg.qr(torch.randn(DIMS, 5, generator=g)).Q.T
    words = torch.randn(HIDDEN, 5, generator=g)

    def batch(count):
        kinds = torch.randint(0, 5, (count, TOKENS), generator=g)
        tokens = prototypes[kinds] + 0.3 * torch.randn(count, TOKENS, DIMS, generator=g)
        points = torch.rand(count, TOKENS, 2, generator=g)
        pointed = torch.randint(0, TOKENS, (count,), generator=g)
        samples = []
        for k in range(count):  # a 4-pixel box around the pointed token's place in a 100 x 100 image
            x, y = (points[k, pointed[k]] * 100).tolist()
            samples.append(region_sample("<image> What colour is <region>?", [[x - 2, y - 2, x + 2, y + 2]],
                                         img_shape=(100, 100)))
        return (tokens, points, samples), kinds[torch.arange(count), pointed]

    def logits(inputs):
        module(*inputs)
        return torch.stack([s.referent_embeds[-1] for s in inputs[2]]) @ words

    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(200):
        inputs, labels = batch(20)
        loss = torch.nn.functional.cross_entropy(logits(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    inputs, labels = batch(200)
    with torch.no_grad():
        right = (logits(inputs).argmax(-1) == labels).float().mean().item()
    assert right == 1.0, f"{right:.3f} right after training (seed {seed})"


@pytest.mark.slow
def test_whole_model_unchanged_until_trained_and_the_answer_trains_it(tmp_path, monkeypatch, tiny_llm_dir,
                                                                       tiny_workspace):
    from tiny_model import build_tiny_model
    _, model, _, _ = build_tiny_model(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch,
                                      region_appearance=dict(type="RegionAppearance"))
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 255, (3, 64, 96), generator=g, dtype=torch.uint8)

    def batch(instruction, regions):
        sample = make_sample("vqa", instruction, target_text="red", img_shape=(64, 96))
        sample.set_metainfo(dict(regions=regions, pad_shape=(64, 96)))
        return model.data_preprocessor(dict(inputs=[image], data_samples=[sample]), True)

    one = ("<image> What colour is <region>?", [[4.0, 4.0, 20.0, 20.0]])
    two = ("<image> Is <region> left of <region>?", [[4.0, 4.0, 20.0, 20.0], [60.0, 30.0, 90.0, 60.0]])
    model.train()

    def text_loss(case):
        return model(**batch(*case), mode="loss")["loss_text"]

    appearance = model.region_appearance
    with torch.no_grad():
        start_one, start_two = text_loss(one), text_loss(two)
        model.region_appearance = None
        try:
            assert torch.equal(text_loss(one), start_one)  # zero-initialised: exactly the model without it
        finally:
            model.region_appearance = appearance
        appearance.map[-1].weight.normal_(0, 0.5, generator=g)
        assert (text_loss(one) - start_one).abs() > 1e-6  # the region's appearance reaches the answer
        assert torch.equal(text_loss(two), start_two)  # two regions: nothing added
    model.zero_grad()
    text_loss(one).backward()
    assert appearance.map[0].weight.grad.abs().sum() > 0 and appearance.map[-1].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        predicted = model(**batch(*one), mode="predict")
    assert "referent_embeds" not in predicted[0]
