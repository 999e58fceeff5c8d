"""Helpers of the task-decoder tests: a tiny random Llama with the SmolLM2 tokenizer, decoder
configs and data samples (the session fixtures that use them are in conftest.py).

Most tests run on a 2-layer, width-64 Llama saved to a temporary HF directory (fast); only the
tests marked as such load the embedded SmolLM2 GGUF itself.
"""
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData


def save_tiny_llama(directory, tokenizer_dir, tie: bool = True, seed: int = 0) -> str:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=4096,
                         tie_word_embeddings=tie, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=None)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # A random head with the default std 0.02 gives logits of magnitude ~1, so a FROZEN base
        # vocabulary could never express a confident next token; a real LLM's table can.
        model.get_input_embeddings().weight.mul_(25.0)
        if not tie:
            model.get_output_embeddings().weight.mul_(25.0)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def tiny_decoder_cfg(llm_dir: str, **overrides) -> dict:
    """A decoder alone: without the image tokenizer there is no memory for the refinements to read."""
    cfg = dict(type="LLMTaskDecoder", llm=dict(source=llm_dir),
               special_tokens=dict(num_bins=65, num_classes=16, max_points=16),
               lora=dict(rank=4, alpha=8, dropout=0.0), generate_format=False,
               box_refinement=None, polygon_refinement=None)
    cfg.update(overrides)
    return cfg


def build_decoder(llm_dir: str, **overrides):
    from visionllm.models.llm.task_decoder import LLMTaskDecoder  # noqa: F401  (registers)
    from visionllm.registry import MODELS
    torch.manual_seed(0)
    decoder = MODELS.build(tiny_decoder_cfg(llm_dir, **overrides))
    decoder.init_weights()  # the starting values the runner gives a model before training
    return decoder


def make_sample(task: str, instruction: str, *, categories=(), output_format=None, bboxes=None,
                labels=None, polygons=None, target_text=None, img_shape=(64, 80), scale_factor=(1.0, 1.0)):
    """A DetDataSample as the data pipeline produces it (contract in docs/interfaces.md)."""
    sample = DetDataSample()
    h, w = img_shape
    ori = (round(h / scale_factor[1]), round(w / scale_factor[0]))
    sample.set_metainfo(dict(img_id=0, task=task, instruction=instruction, categories=list(categories),
                             category_ids=[10 + i for i in range(len(categories))],
                             output_format=output_format, target_text=target_text, img_shape=img_shape,
                             ori_shape=ori, scale_factor=scale_factor))
    gt = InstanceData()
    if bboxes is not None:
        gt.bboxes = torch.as_tensor(bboxes, dtype=torch.float32)
        gt.labels = torch.as_tensor(labels, dtype=torch.long)
    if polygons is not None:
        gt.polygons = torch.as_tensor(polygons, dtype=torch.float32)
    sample.gt_instances = gt
    return sample



def fit_decoder(decoder, embeds, refs, samples, steps: int, lr: float = 5e-3, params=None, decay: bool = True,
                stop_below: float = 0.0):
    """Train ``decoder`` on one fixed batch: AdamW on ``params`` (default: every trainable one),
    the summed losses, gradients clipped to norm 1, the rate decayed linearly to 0 over ``steps``
    when ``decay``; stops early once the summed loss is below ``stop_below``.
    Leaves the decoder in eval mode; returns the last step's losses as floats."""
    params = list(params) if params is not None else [p for p in decoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / steps) if decay else None
    decoder.train()
    for _ in range(steps):
        losses = decoder.loss(embeds, refs, samples)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if schedule is not None:
            schedule.step()
        if sum(losses.values()).item() < stop_below:
            break
    decoder.eval()
    return {k: v.item() for k, v in losses.items()}
