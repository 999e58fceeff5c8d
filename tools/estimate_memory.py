"""Memory per GPU and communication per step of a config, for each strategy x precision.

    python tools/estimate_memory.py configs/visionllm_r50_alpaca7b_stage1.py --gpus 8 --gpu-memory 80 40

The model is built on the meta device (no weights needed: missing pretrained directories are
sized as Alpaca-7B / bert-base). Parameters, gradients and optimizer state are exact counts;
activations of the image tokenizer are measured on a down-scaled CPU forward and scaled, those
of the LLM are modelled per token and layer (see visionllm/engine/memory.py).
"""
import argparse
import os.path as osp


def parse_args():
    parser = argparse.ArgumentParser(description="Estimate memory per GPU of a VisionLLM config")
    parser.add_argument("config")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs in the data-parallel group (all nodes)")
    parser.add_argument("--gpu-memory", type=float, nargs="+", default=[80.0, 40.0], help="GB per GPU to check")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per GPU (default: the config's)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(800, 1344), metavar=("H", "W"),
                        help="padded training image (default: 1333x800 resized, padded to 64)")
    parser.add_argument("--task", choices=["detection", "segmentation"], default="detection")
    parser.add_argument("--categories", type=int, default=80, help="category names in an instruction")
    parser.add_argument("--probe-scale", type=int, default=4, help="image side divisor of the measured forward")
    return parser.parse_args()


def main():
    args = parse_args()
    import torch
    from mmengine.config import Config

    import custom_ops
    from visionllm.engine.memory import (GB, Activations, build_meta_model, format_table, llm_activation_bytes,
                                         measure_tokenizer_activations, memory_table, meta_model_cfg,
                                         parameter_budget, sequence_length)
    if not osp.isfile(args.config):
        raise SystemExit(f"error: config file not found: {args.config}")
    if args.gpus < 1:
        raise SystemExit("error: --gpus must be at least 1")
    cfg = Config.fromfile(args.config)
    model_cfg, notes = meta_model_cfg(cfg.model.to_dict())
    model = build_meta_model(model_cfg)
    budget = parameter_budget(model)
    llm = model.task_decoder.llm.config
    decoder = model.task_decoder
    tokens = sequence_length(model.image_tokenizer.num_queries if hasattr(model.image_tokenizer, "num_queries")
                             else model_cfg["image_tokenizer"]["transformer"]["num_queries"],
                             decoder.num_slots or model_cfg["image_tokenizer"]["transformer"]["num_queries"],
                             args.task, args.categories, decoder.special.max_points)
    kv_dim = llm.hidden_size // llm.num_attention_heads * (llm.num_key_value_heads or llm.num_attention_heads)
    llm_act = {b: llm_activation_bytes(llm.hidden_size, kv_dim, llm.intermediate_size, llm.num_hidden_layers,
                                       tokens, b) for b in (2, 4)}
    torch.set_num_threads(max(1, torch.get_num_threads()))
    custom_ops.set_backend("compiled")
    measured = measure_tokenizer_activations(model_cfg["image_tokenizer"], tuple(args.image_size),
                                             probe_scale=args.probe_scale)
    activations = Activations(tokenizer_fp32=measured["backbone"] + measured["rest"], llm_fp32=llm_act[4],
                              llm_16=llm_act[2])
    batch = args.batch_size or cfg.get("train_dataloader", {}).get("batch_size", 1)
    rows = memory_table(budget, activations, args.gpus, batch)

    print(f"config: {args.config}")
    for note in notes:
        print(f"note: {note}")
    print(f"parameters: {budget.total / 1e9:.3f} B ({budget.trainable / 1e6:.1f} M trainable, "
          f"{budget.frozen / 1e9:.3f} B frozen); FSDP: {budget.num_units} layer units, largest "
          f"{budget.largest_unit / 1e6:.0f} M, root unit {budget.root_unit / 1e6:.0f} M")
    h, w = args.image_size
    ph, pw = measured["probe_size"]
    print(f"activations per sample ({args.task}, {args.categories} categories, {tokens} LLM tokens, "
          f"{h}x{w} image): image tokenizer {activations.tokenizer_fp32 / GB:.2f} GB fp32, measured on a "
          f"{ph}x{pw} forward" + (f" with the backbone {measured['width_scale']:g}x narrower" if
                                  measured["width_scale"] != 1 else "")
          + f" and scaled; LLM {llm_act[4] / GB:.2f} GB fp32 / {llm_act[2] / GB:.2f} GB bf16, modelled "
          f"(memory-efficient attention)")
    print(f"{args.gpus} GPUs, {batch} sample(s) per GPU; bf16 = frozen base in bf16 + autocast (DDP), "
          f"MixedPrecision (FSDP), DeepSpeed bf16 (ZeRO); 'fits' leaves 10 % for the allocator and buffers")
    print(format_table(rows, args.gpu_memory))


if __name__ == "__main__":
    main()
