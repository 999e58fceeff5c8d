"""Check a data tree (and the pretrained inputs) a config needs, before a long run.

    python tools/check_data.py configs/visionllm_r50_alpaca7b_stage2.py
    python tools/check_data.py CONFIG --cfg-options load_from=None --strict

Prints a table of samples per split, dataset and task, then one line per problem:
``MISSING: <path> (<what needs it>): <how to get it>`` for absent files, folders and images, and
``BAD: <annotation file> [<split> <task>]: <count> <reason> (e.g. <ids>)`` for annotations the
readers skip (zero-area or out-of-image boxes, empty polygons, unknown category ids, questions
without answers, ...). Exit code 1 when anything is missing (with ``--strict`` also when any
annotation is bad), else 0. Nothing is written.
"""
import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Check the data a VisionLLM config needs")
    parser.add_argument("config", help="config file path")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config entries, e.g. load_from=None")
    parser.add_argument("--strict", action="store_true", help="exit 1 on bad annotations too")
    parser.add_argument("--no-pretrained", action="store_true",
                        help="skip the checks of the LLM / text encoder / backbone / load_from paths")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from visionllm.apis.runner import load_config
    from visionllm.datasets.checking import check_datasets, format_reports, missing_inputs, samples_by_task

    cfg = load_config(args.config, args.cfg_options)
    reports, problems = check_datasets(cfg)
    if not args.no_pretrained:
        problems = missing_inputs(cfg, data=False) + problems
    for line in format_reports(reports):
        print(line)
    totals = samples_by_task(reports)
    print("samples per split and task: " + ", ".join(f"{split}/{task}={n}" for (split, task), n in totals.items()))
    for problem in problems:
        print(problem)
    missing = sum(p.kind == "missing" for p in problems)
    bad = sum(p.kind == "bad" for p in problems)
    print(f"{missing} missing, {bad} bad-annotation lines")
    return 1 if missing or (args.strict and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
