"""Write the embedded shapes dataset (COCO instances, refs, captions, VQA) for CPU training.

    python tools/make_shapes.py --out data/shapes --num-train 2000 --num-val 200 --seed 0
    python tools/make_shapes.py --out data/shapes_varied --style varied --num-heldout 200

The output is deterministic by seed (and independent of --workers). ``--style classic`` (the
default) is the original data; ``--style varied`` draws backgrounds, colours, sizes, language
... with the "train" settings for train, ``--val-settings`` for val, and the "heldout" settings
(nothing training saw) for a ``val_heldout`` split of ``--num-heldout`` images.
"""
import argparse
import os
import time

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
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    return parser.parse_args(argv)


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


if __name__ == "__main__":
    main()
