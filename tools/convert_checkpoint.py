"""Convert a VisionLLM checkpoint of an older key layout to the current one.

    python tools/convert_checkpoint.py IN OUT

Reads IN without running code from it, renames / reshapes its weights version by version
(``visionllm.engine.checkpoint_conversion`` lists the versions), stamps the current version in its
``meta`` and writes OUT atomically in the format its name asks for (``.safetensors`` or a
``torch.save`` file). Weights stay as stored (a published float16 / int8 file stays compressed).
Loading an older checkpoint with ``tools/test.py``, the inferencer or a runner converts it the same
way on the fly; this tool writes the converted file once.
"""
import argparse
import os.path as osp


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint to convert (IN)")
    parser.add_argument("out", help="converted checkpoint to write (OUT, a new file)")
    args = parser.parse_args(argv)


    from visionllm.apis.inputs import InputError
    from visionllm.engine.checkpoint import read_checkpoint, write_checkpoint
    from visionllm.engine.checkpoint_conversion import VERSION_KEY, checkpoint_version, convert_checkpoint

    if osp.abspath(args.out) == osp.abspath(args.checkpoint):
        raise SystemExit("error: OUT must be a new file (the input checkpoint is never rewritten)")
    try:
        source = read_checkpoint(args.checkpoint)
        before = checkpoint_version(source if "state_dict" in source else dict(state_dict=source))
        converted = convert_checkpoint(source)
    except InputError as error:
        raise SystemExit(f"error: {error}") from None
    write_checkpoint(converted, args.out)
    print(f"wrote {args.out}: version {before} -> {converted['meta'][VERSION_KEY]}, "
          f"{len(converted['state_dict'])} tensors")


if __name__ == "__main__":
    main()
