"""Write the embedded shapes dataset (COCO instances, refs, captions, VQA) for CPU training.

    python tools/make_shapes.py --out data/shapes --num-train 2000 --num-val 200 --seed 0

The output is deterministic by seed (and independent of --workers).
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
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    result = write_shapes_dataset(args.out, args.num_train, args.num_val, args.seed,
                                  (args.min_size, args.max_size), args.max_objects, workers=args.workers)
    for split, data in result.items():
        print(f"{split}: {len(data['instances']['images'])} images, {len(data['instances']['annotations'])} objects, "
              f"{len(data['refs'])} refs, {len(data['captions']['annotations'])} captions, "
              f"{len(data['vqa_questions']['questions'])} questions")
    print(f"wrote {args.out} in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main()
