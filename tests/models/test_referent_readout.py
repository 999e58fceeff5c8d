"""ReferentReadout: what each word of a question receives (the image tokens its phrase names,
pooled by the tokenizer's alignment), where it lands in the LLM prompt (on that word's tokens
only), that it starts at zero and that the answer loss trains it."""
import pytest
import torch
from mmengine.dataset import pseudo_collate

from tiny_llm import make_sample
from tiny_model import build_tiny_model, one_sample_per_task
from visionllm.instructions.words import word_phrases, word_spans
from visionllm.models.image_tokenizer.positional_encoding import sine_point_features
from visionllm.models.referent_readout import ReferentReadout

pytestmark = pytest.mark.usefixtures("single_thread")

QUESTION = "<image> Is the red square left of the blue circle?"
DETECT = 'Detect {"star": <c0>} in <image>. Answer as a list of (c, x1, y1, x2, y2).'


class NamedTokens:
    """A stand-in image tokenizer: a phrase's embedding is its word counts over a fixed
    vocabulary, a token's alignment with a phrase the dot product."""
    vocabulary = ["red", "square", "blue", "circle"]

    def name_embeddings(self, phrases):
        return torch.tensor([[float(p.split().count(w)) for w in self.vocabulary] for p in phrases],
                            dtype=torch.float64)

    def name_logits(self, tokens, names):
        return tokens @ names.t()


def test_each_word_gets_the_tokens_its_phrase_names():
    g = torch.Generator().manual_seed(0)
    hidden = 6
    readout = ReferentReadout(hidden, window=3).double()
    with torch.no_grad():
        readout.out.weight.copy_(torch.randn(hidden, hidden, generator=g, dtype=torch.float64))
        readout.position.weight.copy_(torch.randn(hidden, 2 * readout.num_feats, generator=g, dtype=torch.float64))
    # four tokens: a red square, a blue circle, a red circle, nothing
    tokens = 4.0 * torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.float64)
    llm_tokens = torch.randn(1, 4, hidden, generator=g, dtype=torch.float64)
    points = torch.rand(1, 4, 2, generator=g, dtype=torch.float64)
    question, detect = make_sample("vqa", QUESTION), make_sample("detection", DETECT, categories=["star"])
    readout(NamedTokens(), torch.stack([tokens, tokens]), torch.cat([llm_tokens, llm_tokens]), torch.cat([points, points]),
            [question, detect])

    assert "referent_embeds" not in detect  # box tasks keep their prompts
    vectors = question.referent_embeds
    phrases = word_phrases(QUESTION, 3)
    assert vectors.shape == (len(word_spans(QUESTION)), hidden) == (len(phrases), hidden)
    for t, phrase in enumerate(phrases):  # reference: softmax-pooled tokens and points, scaled by the best match
        logits = tokens @ NamedTokens().name_embeddings([phrase])[0]
        pooled, where = logits.softmax(0) @ llm_tokens[0], logits.softmax(0) @ points[0]
        expected = logits.max().sigmoid() * (readout.out.weight @ pooled + readout.position.weight
                                             @ sine_point_features(where, readout.num_feats, readout.temperature).double())
        torch.testing.assert_close(vectors[t], expected)
    words = [QUESTION[a:b] for a, b in word_spans(QUESTION)]
    square, circle = vectors[words.index("square")], vectors[words.index("circle")]
    # "the red square" is mostly token 0, "the blue circle" token 1: what and where
    cosine = torch.nn.functional.cosine_similarity
    def token_vector(k):
        return readout.out(llm_tokens[0, k]) + readout.position(
            sine_point_features(points[0, k], readout.num_feats, readout.temperature).double())
    assert cosine(square, token_vector(0), dim=0) > 0.99
    assert cosine(circle, token_vector(1), dim=0) > 0.99

    readout.init_weights()
    readout(NamedTokens(), tokens[None], llm_tokens, points, [question])
    assert torch.count_nonzero(question.referent_embeds) == 0  # nothing until trained


@pytest.fixture(scope="module")
def decoder(tiny_llama_dir):
    from tiny_llm import build_decoder
    return build_decoder(tiny_llama_dir).eval()


@pytest.mark.parametrize("history", [None, [{"user": "<image> How many circles are there?", "assistant": "2"}]])
def test_the_vectors_land_on_their_words_tokens(decoder, history):
    instruction = QUESTION if history is None else "Is the red square left of the blue circle?"
    words = [instruction[a:b] for a, b in word_spans(instruction)]
    referents = torch.randn(len(words), decoder.hidden_size, generator=torch.Generator().manual_seed(2))
    image = torch.randn(5, decoder.hidden_size)
    batch = decoder._assemble([decoder._prompt_segments(instruction, image, history, referents=referents)])
    plain = decoder._assemble([decoder._prompt_segments(instruction, image, history)])
    assert batch.input_ids.tolist() == plain.input_ids.tolist()  # the same prompt, only embeddings change
    ids = batch.input_ids[0].tolist()
    added = batch.embeds[0] - plain.embeds[0]
    moved = [i for i in range(len(ids)) if added[i].abs().max() > 0]
    # exactly the tokens that spell the instruction's words, each with its own word's vector
    text = "".join(decoder.tokenizer.decode([ids[i]]) for i in moved)
    assert text.split() == "".join(f" {w}" for w in words).split()
    for i in moved:
        piece = decoder.tokenizer.decode([ids[i]]).strip()
        matches = [k for k, w in enumerate(words) if piece and piece in w]
        assert any(torch.allclose(added[i], referents[k], atol=1e-5) for k in matches)
    # nothing on the template, the image tokens or an earlier turn
    assert len(moved) < len(ids) - image.shape[0]


def test_whole_model_zero_at_start_then_trained_by_the_answer(tmp_path, monkeypatch, tiny_llm_dir,  # noqa: F811
                                                             tiny_workspace):  # noqa: F811
    _, model, train_set, _ = build_tiny_model(tmp_path, tiny_llm_dir, tiny_workspace, monkeypatch,
                                              referent_readout=dict(type="ReferentReadout"))
    batch = pseudo_collate(one_sample_per_task(train_set, ["vqa", "detection"]))
    model.train()
    data = model.data_preprocessor(batch, True)
    with torch.no_grad():
        start = model(**data, mode="loss")["loss_text"]
        model.referent_readout.position.weight.normal_(0, 0.5)
        moved = model(**model.data_preprocessor(batch, True), mode="loss")["loss_text"]
    assert start != moved  # the vectors reach the answer
    losses = model(**model.data_preprocessor(batch, True), mode="loss")
    losses["loss_text"].backward()
    assert model.referent_readout.out.weight.grad.abs().sum() > 0
    assert model.referent_readout.position.weight.grad.abs().sum() > 0
    # the tokenizer's alignment learns from the answer too (the softmax pooling is differentiable)
    assert model.image_tokenizer.name_query.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        predicted = model(**model.data_preprocessor(batch, False), mode="predict")
    assert all("referent_embeds" not in s for s in predicted)
