"""Repetition constraints of caption / answer generation (visionllm.models.llm.generation_constraints),
alone and inside LanguageModelDecoder.generate_text with a stub output layer that always prefers
the same words."""
import pytest
import torch
from tiny_llm import build_decoder

from visionllm.models.llm.generation_constraints import (AllowedTokens, BannedWords, NoRepeatNGram,
                                                       RepetitionPenalty, Spelling, build_text_constraints,
                                                       word_spellings)

# Stub preferences, best first: without constraints greedy decoding repeats "red" forever.
WORDS = {" red": 3.0, " blue": 2.5, " green": 2.0, " circle": 1.5, " square": 1.0}


def test_no_repeat_ngram_bans_the_tokens_that_would_complete_a_seen_ngram():
    assert NoRepeatNGram(3).banned([5, 6, 7, 5, 6]) == {7}
    assert NoRepeatNGram(2).banned([5, 6, 5, 8, 5]) == {6, 8}
    assert NoRepeatNGram(1).banned([4, 4, 9]) == {4, 9}
    assert NoRepeatNGram(3).banned([5]) == set()
    scores = NoRepeatNGram(2)(torch.tensor([[1, 2, 1], [3, 3, 3]]), torch.zeros(2, 5))
    assert torch.isinf(scores[0, 2]) and torch.isinf(scores[1, 3])
    assert torch.isfinite(scores[0, [0, 1, 3, 4]]).all() and torch.isfinite(scores[1, [0, 1, 2, 4]]).all()


def test_repetition_penalty_shrinks_the_logits_of_seen_tokens():
    scores = RepetitionPenalty(2.0)(torch.tensor([[0, 1, 1]]), torch.tensor([[2.0, -2.0, 1.0]]))
    assert scores.tolist() == [[1.0, -4.0, 1.0]]


def test_constraint_config():
    assert build_text_constraints(None) is None
    assert build_text_constraints(dict(no_repeat_ngram_size=0, repetition_penalty=1.0)) is None
    both = build_text_constraints(dict(no_repeat_ngram_size=3, repetition_penalty=1.3))
    assert [type(p) for p in both] == [RepetitionPenalty, NoRepeatNGram]
    with pytest.raises(KeyError, match="unknown text constraint"):
        build_text_constraints(dict(no_repeat_ngram=3))
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        NoRepeatNGram(-1)


@pytest.fixture
def stub_decoder(tiny_llama_dir):
    """A tiny decoder built with n-gram blocking whose output layer is replaced by fixed logits
    (``WORDS``; everything else far below, end of response included)."""
    decoder = build_decoder(tiny_llama_dir, text_constraints=dict(no_repeat_ngram_size=2)).eval()
    ids = {}
    for word, logit in WORDS.items():
        token = decoder.tokenizer.encode(word, add_special_tokens=False)
        assert len(token) == 1, word
        ids[token[0]] = logit

    def fixed_logits(module, inputs, output):
        logits = torch.full_like(output, -1e4)
        for token, logit in ids.items():
            logits[..., token] = logit
        return logits

    handle = decoder.llm.get_output_embeddings().register_forward_hook(fixed_logits)
    yield decoder
    handle.remove()


def generate(decoder, max_new_tokens=8):
    embeds = torch.randn(1, 4, decoder.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return decoder.generate_text(embeds, ["<image> Describe the image."], max_new_tokens=max_new_tokens)[0].split()


def test_ngram_blocking_in_generation_breaks_the_stub_loop(stub_decoder):
    words = generate(stub_decoder)  # the config's no_repeat_ngram_size=2
    assert len(words) == 8 and words[:3] == ["red", "red", "blue"]
    bigrams = list(zip(words, words[1:]))
    assert len(set(bigrams)) == len(bigrams)  # no bigram twice
    # disabled: exactly the stub's greedy choice, every step
    stub_decoder.text_constraints = build_text_constraints(dict(no_repeat_ngram_size=0))
    assert generate(stub_decoder) == ["red"] * 8


def test_repetition_penalty_in_generation(stub_decoder):
    # red 3.0 -> 1.5 once generated, below blue 2.5; then blue 2.5 -> 1.25, below green 2.0
    stub_decoder.text_constraints = build_text_constraints(dict(repetition_penalty=2.0))
    assert generate(stub_decoder, max_new_tokens=3) == ["red", "blue", "green"]


def test_allowed_tokens_masks_each_row_by_its_own_vocabulary():
    scores = torch.zeros(3, 6)
    generated = torch.tensor([[1], [2], [5]])
    out = AllowedTokens([[0, 2], None, lambda ids: [ids[-1], 4]])(generated, scores)
    assert torch.isfinite(out[0]).tolist() == [True, False, True, False, False, False]
    assert torch.isfinite(out[1]).all()
    assert torch.isfinite(out[2]).tolist() == [False, False, False, False, True, True]
    # beam search: rows are blocks of beams, each beam with its own generated ids
    beams = AllowedTokens([lambda ids: ids, [3]])(torch.tensor([[0], [1], [2], [2]]), torch.zeros(4, 6))
    assert [torch.isfinite(row).nonzero().flatten().tolist() for row in beams] == [[0], [1], [3], [3]]
    with pytest.raises(ValueError, match="no allowed token"):
        AllowedTokens([[]])(generated[:1], scores[:1])


def test_request_words_config_builds_no_row_independent_processor():
    assert build_text_constraints(dict(request_words=[], request_categories=["star"])) is None


def test_a_plain_requests_canonical_form_uses_only_the_requests_words(stub_decoder):
    from visionllm.tasks import wrap_request
    request = wrap_request("Is there a green square in <image>?")
    caption = "<image> Describe the image."
    embeds = torch.randn(2, 4, stub_decoder.hidden_size, generator=torch.Generator().manual_seed(0))

    def both():
        with torch.no_grad():
            return [text.split() for text in stub_decoder.generate_text(embeds, [request, caption], max_new_tokens=4)]
    free_request, free_caption = both()
    assert free_request == free_caption == ["red", "red", "blue", "red"]  # stub order under bigram blocking
    stub_decoder.request_words = ()
    constrained_request, caption_words = both()
    # red and blue are not in the request: its best words are green, then square
    assert constrained_request == ["green", "green", "square", "green"]
    assert caption_words == free_caption  # a row that is not a request stays free


def test_category_names_are_allowed_only_in_a_category_list(stub_decoder):
    stub_decoder.request_words, stub_decoder.request_categories = (), ("circle",)
    allowed = stub_decoder._request_vocabulary("Find all the shapes in the image.")
    circle = stub_decoder.tokenizer.encode(" circle", add_special_tokens=False)[0]
    assert circle not in allowed([])
    assert circle in allowed(stub_decoder.tokenizer.encode("detection:", add_special_tokens=False))
    assert circle in allowed(stub_decoder.tokenizer.encode("segmentation: star;", add_special_tokens=False))
    assert circle not in allowed(stub_decoder.tokenizer.encode("vqa: is there a", add_special_tokens=False))


def test_banned_words_forbid_one_token_words_and_the_last_token_of_longer_ones():
    # word A = [7] (one token), word B = [3, 4] whose first token is a fragment, word C = [5, 6]
    # whose first token is a word of its own, word D = [8, 9] spelled at the start of a text only
    banned = BannedWords([[Spelling((7,), False, True), Spelling((3, 4), False, False),
                           Spelling((5, 6), False, True), Spelling((8, 9), True, False)], None])
    assert banned.forbidden(0, []) == {7, 3, 8}
    assert banned.forbidden(0, [1]) == {7, 3}  # D no longer possible
    assert banned.forbidden(0, [1, 3]) == {7, 3, 4}  # B begun anyway (by beam or prompt): not finished
    assert banned.forbidden(0, [1, 5]) == {7, 3, 6}
    assert banned.forbidden(0, [8]) == {7, 3, 9}
    assert banned.forbidden(0, [2, 8]) == {7, 3}
    assert banned.forbidden(1, [3]) == set()
    scores = banned(torch.tensor([[1, 5], [1, 5]]), torch.zeros(2, 10))
    assert torch.isinf(scores[0]).nonzero().flatten().tolist() == [3, 6, 7]
    assert torch.isfinite(scores[1]).all()


def test_word_spellings_of_a_real_tokenizer(tiny_llama_dir):
    decoder = build_decoder(tiny_llama_dir)
    tokenizer = decoder.tokenizer
    spellings = word_spellings(tokenizer, ["circle", "hexagon"])
    assert len(spellings) == 4
    for ids, at_start, open_start in spellings:
        text = tokenizer.decode(list(ids))
        assert text.strip() in ("circle", "hexagon") and text.startswith(" ") != at_start
        assert open_start == (len(ids) == 1 or tokenizer.decode(list(ids[:1])).strip() == text.strip())


def test_banned_words_in_generation_change_only_their_row(stub_decoder):
    embeds = torch.randn(2, 4, stub_decoder.hidden_size, generator=torch.Generator().manual_seed(0))
    texts = ["<image> Describe the image."] * 2

    def run(banned):
        with torch.no_grad():
            return [text.split() for text in stub_decoder.generate_text(embeds, texts, max_new_tokens=4,
                                                                         banned_words=banned)]
    free = run(None)
    assert free[0] == free[1] == ["red", "red", "blue", "red"]
    grounded, other = run([["red", "blue"], None])
    assert grounded == ["green", "green", "circle", "green"]  # the stub's order without red and blue
    assert other == free[1]
