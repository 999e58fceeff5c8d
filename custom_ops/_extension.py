"""Loading of the compiled op extensions, with one clear warning when one is missing."""
import importlib
import warnings

_cache = {}


def load_extension(module_name: str):
    """Import a compiled extension such as ``custom_ops.ms_deform_attn._C``.

    Returns the module, or ``None`` when it was not built; the caller then uses the pure-PyTorch
    reference. The warning is given once per extension so a training loop is not flooded.
    """
    if module_name not in _cache:
        try:
            _cache[module_name] = importlib.import_module(module_name)
        except ImportError as err:
            warnings.warn(
                f"{module_name} is not built ({err}); falling back to the slow pure-PyTorch "
                "reference. Build it with `make ops` (or `python setup.py build_ext --inplace`).",
                RuntimeWarning,
                stacklevel=2,
            )
            _cache[module_name] = None
    return _cache[module_name]
