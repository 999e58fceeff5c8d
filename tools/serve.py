"""Serve a trained VisionLLM: a web page at / and an HTTP API, in one process.

    python tools/serve.py configs/visionllm_tiny_shapes.py checkpoints/visionllm_tiny_shapes.pth \
        [--host 127.0.0.1] [--port 7860] [--max-upload-mb 20]

    curl -F image=@img.png -F 'instruction=<image> Write a short caption for the image.' \
        http://127.0.0.1:7860/v1/infer

Routes: GET / (the page), POST /v1/infer (multipart: image, instruction, optional
score_threshold), GET /healthz. See docs/serving.md.
"""
import argparse
import logging
import sys


def parse_args(argv=None):
    from visionllm.apis.server import DEFAULT_MAX_UPLOAD_MB

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all interfaces)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help="larger request bodies are refused with HTTP 413 before decoding")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--examples-dir", default=None,
                        help="where the page's example images are written (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.max_upload_mb <= 0:
        parser.error(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from visionllm.apis.inputs import InputError
    from visionllm.apis.server import serve

    try:
        serve(args.config, args.checkpoint, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
              device=args.device, page_options=dict(examples_dir=args.examples_dir))
    except InputError as err:  # a missing config / checkpoint
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
