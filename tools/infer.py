"""Run a trained VisionLLM on images with one instruction; print results, write pictures.

    python tools/infer.py configs/visionllm_tiny_shapes.py checkpoints/visionllm_tiny_shapes.pth \
        img1.png img2.png --instruction '<image> Write a short caption for the image.' --out-dir outputs
"""
import argparse
import json
import os.path as osp
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="VisionLLM inference")
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--instruction", required=True, help="plain-language instruction containing <image>")
    parser.add_argument("--out-dir", default="outputs", help="where the pictures go")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    from visionllm.apis.inferencer import VisionLLMInferencer
    from visionllm.apis.inputs import InputError

    try:
        inferencer = VisionLLMInferencer(args.config, args.checkpoint, device=args.device)
        results = inferencer(list(args.images), args.instruction)
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
