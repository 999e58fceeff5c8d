"""Fixtures shared by the test modules (pytest finds them here; tests need no imports for them).

Plain helpers (tiny model configs, data samples, data trees, op references) stay in the helper
modules next to the tests: tiny_llm.py, tiny_model.py, paper_data_tree.py, op_precision.py.
"""
import os

import pytest
import torch
from tiny_llm import save_tiny_llama


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory):
    """The embedded SmolLM2's tokenizer as an HF tokenizer folder, saved once per session."""
    from transformers import AutoTokenizer
    from visionllm.models.llm.llm_loader import load_tokenizer
    from visionllm.utils.embedded import smollm2_dir, smollm2_gguf_path
    folder = smollm2_dir()
    if folder:
        tokenizer = load_tokenizer(folder)
    else:
        path = smollm2_gguf_path()
        tokenizer = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    out = tmp_path_factory.mktemp("smollm2_tokenizer")
    tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, smollm2_tokenizer_dir):
    """A tiny random Llama (tiny_llm.save_tiny_llama) for the task-decoder tests."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), smollm2_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory, smollm2_tokenizer_dir):
    """The same tiny Llama in its own folder, for the whole-model tests (tiny_model.py)."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama_full"), smollm2_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory):
    """A folder holding ``data/shapes`` (a few small images): the data configs use that relative
    path, so tests chdir here."""
    from visionllm.datasets.shapes import write_shapes_dataset
    root = tmp_path_factory.mktemp("workspace")
    write_shapes_dataset(str(root / "data" / "shapes"), num_train=12, num_val=4, seed=3, image_size=(64, 96),
                         max_objects=3)
    return str(root)


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models on a shared 2-core machine run ~10x faster on one thread (no oversubscription)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
