"""Write the embedded shapes dataset (COCO instances, refs, captions, VQA) for CPU training.

    python tools/make_shapes.py --out data/shapes --num-train 2000 --num-val 200 --seed 0
    python tools/make_shapes.py --out data/shapes_varied --style varied --num-heldout 200

The output is deterministic by seed (and independent of --workers). ``--style classic`` (the
default) is the original data; ``--style varied`` draws backgrounds, colours, sizes, language
... with the "train" settings for train, ``--val-settings`` for val, and the "heldout" settings
(nothing training saw) for a ``val_heldout`` split of ``--num-heldout`` images.
"""
import argparse
import json
import os
import time
from collections import Counter

from visionllm.datasets.shapes import write_shapes_dataset


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/shapes", help="output folder")
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-size", type=int, default=128, help="smallest image side")
    parser.add_argument("--max-size", type=int, default=192, help="largest image side")
    parser.add_argument("--max-objects", type=int, default=6)
    parser.add_argument("--style", choices=("classic", "varied"), default="classic",
                        help="classic: the original generator; varied: wide variety (docs/datasets.md)")
    parser.add_argument("--val-settings", choices=("train", "heldout"), default="train",
                        help="varied style: the settings val is drawn with")
    parser.add_argument("--num-heldout", type=int, default=0,
                        help="varied style: images of an extra val_heldout split drawn with the held-out settings")
    parser.add_argument("--stats", action="store_true",
                        help="print objects per image, background kinds, answer types and yes/no share per split")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    return parser.parse_args(argv)


def split_statistics(out_dir: str, split: str) -> dict:
    """Simple statistics of a written split, read back from its json files."""
    def load(key):
        with open(os.path.join(out_dir, "annotations", f"{key}_{split}.json")) as f:
            return json.load(f)
    instances = load("instances")
    per_image = Counter(a["image_id"] for a in instances["annotations"])
    answers = load("vqa_annotations")["annotations"]
    yes_no = Counter(a["multiple_choice_answer"] for a in answers if a["answer_type"] == "yes/no")
    return dict(
        objects_per_image=Counter(per_image.get(i["id"], 0) for i in instances["images"]),
        backgrounds=Counter(i.get("background", "classic") for i in instances["images"]),
        files=Counter(os.path.splitext(i["file_name"])[1] for i in instances["images"]),
        colours=Counter(a["attributes"]["colour"] for a in instances["annotations"]),
        answer_types=Counter(a["answer_type"] for a in answers),
        yes_share=yes_no["yes"] / max(1, sum(yes_no.values())))


def print_statistics(out_dir: str, split: str) -> None:
    stats = split_statistics(out_dir, split)
    hist = stats["objects_per_image"]
    print(f"{split}: objects per image " + " ".join(f"{k}:{hist[k]}" for k in sorted(hist)))
    for key in ("backgrounds", "files", "colours", "answer_types"):
        print(f"  {key}: " + ", ".join(f"{k} {v}" for k, v in stats[key].most_common()))
    print(f"  yes/no questions answered yes: {100 * stats['yes_share']:.1f} %")


def main(argv=None):
    args = parse_args(argv)
    if args.style == "classic" and (args.num_heldout or args.val_settings != "train"):
        raise SystemExit("--num-heldout and --val-settings need --style varied")
    start = time.time()
    result = write_shapes_dataset(args.out, args.num_train, args.num_val, args.seed,
                                  (args.min_size, args.max_size), args.max_objects, workers=args.workers,
                                  style=args.style, val_settings=args.val_settings, num_heldout=args.num_heldout)
    for split, data in result.items():
        print(f"{split}: {len(data['instances']['images'])} images, {len(data['instances']['annotations'])} objects, "
              f"{len(data['refs'])} refs, {len(data['captions']['annotations'])} captions, "
              f"{len(data['vqa_questions']['questions'])} questions")
    print(f"wrote {args.out} in {time.time() - start:.1f} s")
    if args.stats:
        for split in result:
            print_statistics(args.out, split)


if __name__ == "__main__":
    main()
