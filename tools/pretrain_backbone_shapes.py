"""Pretrain the ResNet body of the tiny model on the shapes train split (dense shape-kind labels).

    python tools/pretrain_backbone_shapes.py --out work_dirs/backbone_shapes --iters 1500 --seed 0

Why: the embedded default has no ImageNet weights (nothing is downloaded), and a random-init
ResNet trained through the whole VisionLLM loss sees ~3.5 objects per step, too few to learn
which shape is which. Here every pixel is a label: a light FPN head on the strides 8/16/32 features
predicts the shape kind (or background) per pixel, with batches of whole images. The saved file
holds only the ResNet body (timm key names) and feeds the model config through
``model.image_tokenizer.backbone.checkpoint``. The held-out number printed is the per-object kind
accuracy on the val split (mean class probability over each object's pixels). The files are
written once, at the end. The training itself is
``visionllm.engine.shape_kind_pretraining.pretrain_shape_kind_body``, which the one-run config's
``ShapeKindPretrainingHook`` also runs as the first stage of ``tools/train.py``.
"""
import argparse
import os

from tqdm import tqdm

from visionllm.engine.shape_kind_pretraining import BODY_FILE, pretrain_shape_kind_body


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="data/shapes")
    parser.add_argument("--out", default="work_dirs/backbone_shapes", help="output folder")
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--iters", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--size", type=int, default=192, help="long side of the resized images (as in training)")
    parser.add_argument("--eval-interval", type=int, default=500)
    parser.add_argument("--max-images", type=int, default=None, help="use only the first N images of each split")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        history = pretrain_shape_kind_body(args.data_root, args.out, depth=args.depth, iters=args.iters,
                                           batch_size=args.batch_size, lr=args.lr, size=args.size,
                                           eval_interval=args.eval_interval, max_images=args.max_images,
                                           seed=args.seed, log=tqdm.write)
    except FileNotFoundError as error:
        raise SystemExit(f"error: {error}")
    print(f"saved {os.path.join(args.out, BODY_FILE)}; final val object kind accuracy "
          f"{100 * history[-1]['val_object_kind_accuracy']:.1f} %")


if __name__ == "__main__":
    main()
