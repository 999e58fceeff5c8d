"""Evaluate one checkpoint under several text-generation constraints, building the model once.

    python tools/measure_text_constraints.py CONFIG CHECKPOINT \
        --settings none rp=1.2 ngram=3 [--cfg-options KEY=VALUE ...]

Each setting is ``none``, ``rp=P`` (``repetition_penalty``), ``ngram=N``
(``no_repeat_ngram_size``) or both joined by ``+`` (``rp=1.2+ngram=3``). Every run is
``tools/test.py CONFIG CHECKPOINT --cfg-options ... model.task_decoder.text_constraints=...``
(same runner, test loop and metrics) without rebuilding the model in between; the script prints
every metric table as tools/test.py does, then one summary row per setting.
"""
import argparse
import importlib.util
import os.path as osp

from visionllm.engine import unwrapped_model
from visionllm.evaluation.table import print_table
from visionllm.models.llm.generation_constraints import build_text_constraints


def load_test_tool():
    """tools/test.py next to this file (by path: the name ``test`` is also a standard package)."""
    spec = importlib.util.spec_from_file_location("visionllm_tools_test", osp.join(osp.dirname(osp.abspath(__file__)),
                                                                                   "test.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

KEYS = dict(rp="repetition_penalty", ngram="no_repeat_ngram_size")


def parse_setting(text: str) -> dict:
    """``'rp=1.2+ngram=3'`` -> ``dict(repetition_penalty=1.2, no_repeat_ngram_size=3)``; ``'none'`` -> {}."""
    if text == "none":
        return {}
    setting = {}
    for part in text.split("+"):
        key, _, value = part.partition("=")
        if key not in KEYS or not value:
            raise SystemExit(f"error: bad setting {text!r} (use none, rp=P, ngram=N or both joined by +)")
        setting[KEYS[key]] = int(value) if key == "ngram" else float(value)
    return setting


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--settings", nargs="+", default=["none"])
    parser.add_argument("--work-dir", default="outputs/text_constraints")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    settings = [(text, parse_setting(text)) for text in args.settings]

    import mmengine.runner
    built = {}  # the runner of the first tools/test.py run (it builds and loads the model)
    original_test = mmengine.runner.Runner.test

    def keep(runner):
        built["runner"] = runner
        return original_test(runner)

    rows, header = [], None
    mmengine.runner.Runner.test = keep
    try:
        for index, (text, setting) in enumerate(settings):
            if not built:
                metrics = load_test_tool().main([args.config, args.checkpoint, "--work-dir", args.work_dir,
                                     "--cfg-options", *args.cfg_options,
                                     *([f"model.task_decoder.text_constraints.{k}={v}" for k, v in setting.items()])])
            else:
                unwrapped_model(built["runner"].model).task_decoder.text_constraints = build_text_constraints(setting)
                metrics = original_test(built["runner"])
            header = header or list(metrics)
            rows.append([text] + [metrics.get(name, float("nan")) for name in header])
    finally:
        mmengine.runner.Runner.test = original_test
    print_table(f"Text constraints ({args.checkpoint})", ["setting"] + header, rows)


if __name__ == "__main__":
    main()
