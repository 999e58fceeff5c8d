"""Make the checkpoint to ship from a training checkpoint.

    python tools/publish_checkpoint.py configs/visionllm_tiny_shapes.py \\
        work_dirs/tiny_shapes/iter_600.pth checkpoints/visionllm_tiny_shapes.pth

Keeps only the trained weights (the frozen LLM and text encoder come from their packages),
drops the optimizer state, stores floats as float16 and the backbone's kernels as int8 with
per-channel scales, so the embedded default fits in a few tens of MB. An OUT ending in
``.safetensors`` is written in that format (tensors only, ``meta`` as JSON in the header; the
Hugging Face convention); any other name as a ``torch.save`` file. Both load with
``load_trained_checkpoint``, and the training checkpoint is read without running code from it.
"""
import argparse
import os
import os.path as osp



def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--int8-prefixes", nargs="*", default=["image_tokenizer.backbone.body"])
    args = parser.parse_args(argv)

    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import visionllm.models  # noqa: F401
    from visionllm.apis.inputs import InputError
    from visionllm.engine.checkpoint import compress_state_dict, read_checkpoint, write_checkpoint
    from visionllm.registry import MODELS

    from visionllm.engine.checkpoint_conversion import convert_checkpoint

    try:
        source = convert_checkpoint(read_checkpoint(args.checkpoint))
    except InputError as error:
        raise SystemExit(f"error: {error}") from None
    DefaultScope.get_instance("publish", scope_name="visionllm")
    model = MODELS.build(Config.fromfile(args.config).model)
    drop = set(model.frozen_pretrained_keys())
    state = {k: v for k, v in source["state_dict"].items() if k not in drop}
    unknown = set(state) - set(model.state_dict())
    if unknown:
        raise SystemExit(f"error: {len(unknown)} keys of the checkpoint are not in the model, e.g. {sorted(unknown)[:3]}")
    meta = dict(source.get("meta", {}))
    meta.pop("dataset_meta", None)
    meta["published_from"] = osp.basename(args.checkpoint)
    packed = dict(meta=meta, state_dict=compress_state_dict(state, args.int8_prefixes))
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    write_checkpoint(packed, args.out)
    print(f"wrote {args.out}: {len(state)} tensors, {osp.getsize(args.out) / 1e6:.1f} MB "
          f"(dropped {len(drop)} frozen pretrained keys and the optimizer state)")


if __name__ == "__main__":
    main()
