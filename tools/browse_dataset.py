"""Show the samples a config feeds the model: instruction, target, boxes, after the whole pipeline.

    python tools/browse_dataset.py configs/visionllm_tiny_shapes_onerun.py -n 20
    python tools/browse_dataset.py CONFIG --split val -n 50 --show-dir outputs/browse --out samples.jsonl

Prints one line per sample (task, instruction -> target), the samples per task and a fingerprint
(md5 of every record: task, instruction, target text, categories, history, regions, boxes,
labels, polygons, md5 of the image tensor). Two configs or two commits whose first N samples have
the same fingerprint feed the model the same stream, so a recipe can be checked to be reproduced
without training it. The sampler and the random generators are seeded with the config's seed, as
the runner does; a ``MultiTaskDataset`` (every training mixture here) makes each sample a
function of (seed, epoch, index) alone, so this is the stream a training run of the config draws.
``--out`` writes the records (JSON lines); ``--show-dir`` draws each image with its boxes,
polygons, regions and text.
"""
import argparse
import json
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Show the samples a VisionLLM config feeds the model")
    parser.add_argument("config", help="config file path")
    parser.add_argument("--split", default="train", choices=("train", "val", "test"), help="which dataloader")
    parser.add_argument("-n", "--num", type=int, default=20, help="number of samples (default 20)")
    parser.add_argument("--out", help="write the records to this JSON-lines file")
    parser.add_argument("--show-dir", help="write a picture of each sample into this folder")
    parser.add_argument("--quiet", action="store_true", help="print only the counts and the fingerprint")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config entries, e.g. train_dataloader.dataset.ratios=[...]")
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f"-n must be at least 1, got {args.num}")
    return args


def picture(inputs, record):
    """The sample's image with its ground truth drawn (RGB array)."""
    import numpy as np

    from visionllm.visualization.visualizer import draw_instances
    image = inputs.permute(1, 2, 0).numpy()
    boxes = np.asarray(record["boxes"], dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(record["labels"], dtype=np.int64) if record["labels"] else np.zeros(len(boxes), np.int64)
    polygons = (np.asarray(record["polygons"], dtype=np.float32).reshape(len(boxes), -1, 2)
                if record["polygons"] else None)
    names = record["categories"] or [record.get("target_text") or record["task"]]
    regions = np.asarray(record["regions"], dtype=np.float32).reshape(-1, 4) if record["regions"] else None
    text = f"{record['instruction']} -> {record['target_text']}" if record["target_text"] else record["instruction"]
    return draw_instances(image, boxes, np.ones(len(boxes)), labels, names, polygons=polygons, text=text,
                          keep_all=True, regions=regions)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from visionllm.apis.runner import load_config
    from visionllm.datasets.browsing import count_by_task, fingerprint, iter_samples, sample_record

    cfg = load_config(args.config, args.cfg_options)
    records = []
    out = open(args.out, "w") if args.out else None
    try:
        for inputs, data_sample in tqdm(iter_samples(cfg, args.split, args.num), total=args.num, file=sys.stderr,
                                        desc="samples", disable=args.quiet):
            record = sample_record(inputs, data_sample)
            records.append(record)
            if out is not None:
                out.write(json.dumps(record) + "\n")
            if not args.quiet:
                target = f" -> {record['target_text']!r}" if record["target_text"] is not None else ""
                boxes = f" [{len(record['boxes']) // 4} boxes]" if record["boxes"] else ""
                tqdm.write(f"{len(records):5d} {record['task']}: {record['instruction']!r}{target}{boxes}")
            if args.show_dir:
                from PIL import Image
                os.makedirs(args.show_dir, exist_ok=True)
                Image.fromarray(picture(inputs, record)).save(
                    os.path.join(args.show_dir, f"{len(records):05d}_{record['task']}.png"))
    finally:
        if out is not None:
            out.close()
    print("samples per task: " + ", ".join(f"{task}={n}" for task, n in count_by_task(records).items()))
    print(f"fingerprint of {len(records)} {args.split} samples: {fingerprint(records)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
