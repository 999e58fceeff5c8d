"""The embedded SmolLM2 GGUF is converted once into a cached Hugging Face folder: loading that
folder gives the same weights, logits and tokenizer as reading the GGUF, and the cache survives
interrupted conversions, races and an unwritable location."""
import os

import pytest
import torch

from visionllm.utils import embedded


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONLLM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fake_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(os.urandom(64))
    return str(path)


def write_stub_conversion(gguf_path, out_dir):
    with open(os.path.join(out_dir, "config.json"), "w") as handle:
        handle.write("{}")


@pytest.mark.slow
def test_cached_folder_gives_the_gguf_model_and_tokenizer(monkeypatch):
    """On the real cache (converted here if no earlier load did): one direct GGUF read to compare."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from visionllm.models.llm.llm_loader import load_causal_lm

    model, tokenizer = load_causal_lm("smollm2")
    gguf = embedded.smollm2_gguf_path()
    folder = embedded.converted_dir_path(gguf)
    assert os.path.isfile(os.path.join(folder, embedded.COMPLETE_MARKER))

    folder_name, file_name = os.path.split(gguf)
    direct = AutoModelForCausalLM.from_pretrained(folder_name, gguf_file=file_name, dtype=torch.float32)
    direct_tokenizer = AutoTokenizer.from_pretrained(folder_name, gguf_file=file_name)
    ours, theirs = model.state_dict(), direct.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    texts = ["Detect {\"star\": <c0>} in the image.", "  how many RED squares?\n", "naïve café — 12,5 %"]
    for text in texts:
        assert tokenizer(text).input_ids == direct_tokenizer(text).input_ids
    chat = [{"role": "user", "content": texts[0]}]
    assert (tokenizer.apply_chat_template(chat, tokenize=False)
            == direct_tokenizer.apply_chat_template(chat, tokenize=False))
    ids = torch.tensor([tokenizer(texts[1]).input_ids])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, direct(ids).logits)

    # A second load reads the folder and converts nothing.
    monkeypatch.setattr(embedded, "convert_gguf_to_hf", lambda *a: pytest.fail("converted twice"))
    again, _ = load_causal_lm("smollm2", num_layers=2)
    assert len(again.model.layers) == 2
    assert torch.equal(again.model.layers[1].mlp.up_proj.weight, direct.model.layers[1].mlp.up_proj.weight)


def test_interrupted_conversion_is_redone(cache_dir, fake_gguf, monkeypatch):
    target = embedded.converted_dir_path(fake_gguf)
    os.makedirs(target)
    with open(os.path.join(target, "model.safetensors"), "w") as handle:
        handle.write("half written")  # no completion marker: an interrupted conversion
    monkeypatch.setattr(embedded, "convert_gguf_to_hf", write_stub_conversion)
    assert embedded.converted_gguf_dir(fake_gguf) == target
    assert sorted(os.listdir(target)) == sorted([embedded.COMPLETE_MARKER, "config.json"])
    assert os.listdir(os.path.dirname(target)) == [os.path.basename(target)]  # no staging folder left


def test_a_concurrent_conversion_that_finished_first_is_kept(cache_dir, fake_gguf, monkeypatch):
    target = embedded.converted_dir_path(fake_gguf)

    def other_process_wins(gguf_path, out_dir):
        os.makedirs(target)
        open(os.path.join(target, "winner"), "w").close()
        open(os.path.join(target, embedded.COMPLETE_MARKER), "w").close()
        write_stub_conversion(gguf_path, out_dir)

    monkeypatch.setattr(embedded, "convert_gguf_to_hf", other_process_wins)
    assert embedded.converted_gguf_dir(fake_gguf) == target
    assert "winner" in os.listdir(target)
    assert os.listdir(os.path.dirname(target)) == [os.path.basename(target)]


def test_failed_conversion_leaves_nothing(cache_dir, fake_gguf, monkeypatch):
    def broken(gguf_path, out_dir):
        write_stub_conversion(gguf_path, out_dir)
        raise RuntimeError("not a GGUF file")

    monkeypatch.setattr(embedded, "convert_gguf_to_hf", broken)
    with pytest.raises(RuntimeError, match="not a GGUF"):
        embedded.converted_gguf_dir(fake_gguf)
    assert os.listdir(os.path.dirname(embedded.converted_dir_path(fake_gguf))) == []


def test_unwritable_cache_falls_back_to_the_gguf(tmp_path, fake_gguf, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("VISIONLLM_CACHE_DIR", str(blocker))
    monkeypatch.setattr(embedded, "convert_gguf_to_hf", lambda *a: pytest.fail("no place to convert into"))
    with pytest.warns(UserWarning, match="loading the GGUF directly"):
        assert embedded.converted_gguf_dir(fake_gguf) == ""


def test_cache_key_follows_the_file_content(cache_dir, fake_gguf):
    before = embedded.converted_dir_path(fake_gguf)
    with open(fake_gguf, "ab") as handle:
        handle.write(b"changed")
    assert embedded.converted_dir_path(fake_gguf) != before
