"""Run a trained VisionLLM on images with one instruction; print results, write pictures.

    python tools/infer.py configs/visionllm_tiny_shapes.py checkpoints/visionllm_tiny_shapes.pth \
        img1.png img2.png --instruction '<image> Write a short caption for the image.' --out-dir outputs
    python tools/infer.py CONFIG CHECKPOINT img.png --instruction '<image> What colour is <region>?' \
        --region 10,20,60,80

``--region x1,y1,x2,y2`` (pixels of the input image) fills the instruction's ``<region>``
placeholders in order, one flag per placeholder.

Any config with a checkpoint works: without an ``infer_pipeline`` the config's test pipeline is
used minus its loading and annotation steps (docs/datasets.md). Missing pretrained directories are
named one per line before anything is built.
"""
import argparse
import json
import os.path as osp
import sys


def missing_pretrained(config: str) -> list:
    """One line per pretrained directory / file the model of ``config`` needs and lacks (the LLM
    and text encoder directories, backbone weights); ``load_from`` plays no part in inference."""
    if not osp.isfile(config):
        return []  # the inferencer reports it
    from mmengine.config import Config

    from visionllm.datasets.checking import missing_inputs
    cfg = Config.fromfile(config)
    cfg.load_from = None
    return [p.text for p in missing_inputs(cfg, data=False)]


def parse_region(text: str) -> list:
    """``'x1,y1,x2,y2'`` → four floats; anything else is an ``InputError``."""
    from visionllm.apis.inputs import InputError
    parts = text.replace(" ", "").split(",")
    try:
        if len(parts) != 4:
            raise ValueError
        return [float(p) for p in parts]
    except ValueError:
        raise InputError(f"--region takes four comma-separated numbers x1,y1,x2,y2, got {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="VisionLLM inference")
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--instruction", required=True, help="plain-language instruction containing <image>")
    parser.add_argument("--out-dir", default="outputs", help="where the pictures go")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--region", action="append", default=[], metavar="x1,y1,x2,y2",
                        help="a box in pixels of the input image for the next <region> of the instruction (repeatable)")
    args = parser.parse_args(argv)

    from visionllm.apis.inferencer import VisionLLMInferencer, check_request
    from visionllm.apis.inputs import InputError

    missing = missing_pretrained(args.config)
    if missing:
        for line in missing:
            print(f"error: missing {line}", file=sys.stderr)
        return 2
    try:
        regions = [parse_region(text) for text in args.region]
        for path in args.images:  # bad input is refused before the model is built
            check_request(path, args.instruction, regions)
        inferencer = VisionLLMInferencer(args.config, args.checkpoint, device=args.device)
        results = inferencer(list(args.images), args.instruction, regions=regions,
                             score_threshold=args.score_threshold)
        for path, result in zip(args.images, results):
            out_file = osp.join(args.out_dir, osp.splitext(osp.basename(path))[0] + f"_{result.task}.png")
            inferencer.visualize(path, result, out_file)
            keep = result.scores >= args.score_threshold
            record = dict(image=path, task=result.task, picture=out_file)
            if result.text is not None:
                record["text"] = result.text
            else:
                record["objects"] = [dict(name=n, score=round(float(s), 3), box=[round(float(v), 1) for v in b])
                                     for n, s, b, k in zip(result.names, result.scores, result.boxes, keep) if k]
            print(json.dumps(record))
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
