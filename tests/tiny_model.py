"""A whole VisionLLM small enough for unit tests, plus a few generated shapes images.

Tiny random Llama (saved by tiny_llm.save_tiny_llama) and a 1-layer random BERT, ResNet-18 backbone on
64-96 px images: builds in seconds, trains a few iterations in seconds.
"""
import os
import textwrap

TINY_TEXT_ENCODER = dict(pretrained=False, trainable=True,
                         config_overrides=dict(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                               intermediate_size=64, hidden_dropout_prob=0.0,
                                               attention_probs_dropout_prob=0.0))


def tiny_model_cfg(llm_dir: str) -> dict:
    return dict(
        type="VisionLLM",
        data_preprocessor=dict(type="VisionLLMDataPreprocessor", pad_size_divisor=32),
        image_tokenizer=dict(
            type="ImageTokenizer", embed_dims=32,
            backbone=dict(type="ResNetBackbone", depth=18, zero_init_last=False),
            text_encoder=TINY_TEXT_ENCODER,
            fusion=dict(num_heads=2),
            transformer=dict(num_heads=2, num_points=2, ffn_dims=64, dropout=0.0, num_encoder_layers=1,
                             num_decoder_layers=1, num_queries=6)),
        task_decoder=dict(type="LLMTaskDecoder", llm=dict(source=llm_dir),
                          special_tokens=dict(num_bins=65, num_classes=16, max_points=16),
                          lora=dict(rank=4, alpha=8, dropout=0.0), max_new_tokens=4),
        pretrained_prefixes=("task_decoder.llm",),
    )


def write_tiny_config(directory, llm_dir: str, max_iters: int = 4, extra: str = "") -> str:
    """A complete train/test config over the tiny model and the shapes data under ./data/shapes."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = textwrap.dedent(f"""
        _base_ = [
            "{repo}/configs/_base_/datasets/shapes_all_tasks.py",
            "{repo}/configs/_base_/schedules/adamw_cosine.py",
            "{repo}/configs/_base_/default_runtime.py",
        ]
        model = {tiny_model_cfg(llm_dir)!r}
        train_cfg = dict(type="IterBasedTrainLoop", max_iters={max_iters}, val_interval={max_iters + 1})
        param_scheduler = [dict(type="CosineAnnealingLR", by_epoch=False, begin=0, end={max_iters})]
        optim_wrapper = dict(optimizer=dict(lr=1e-3))
        default_hooks = dict(checkpoint=dict(interval=2, max_keep_ckpts=5), logger=dict(interval=1))
        val_dataloader = None
        val_cfg = None
        val_evaluator = None
        randomness = dict(seed=7)
        infer_pipeline = [dict(type="ResizeKeepRatio", scale=(96, 64)), dict(type="PackVisionLLMInputs")]
        train_dataloader = dict(dataset=dict(length=64))
        """)
    text += extra
    os.makedirs(str(directory), exist_ok=True)
    path = os.path.join(str(directory), "tiny_config.py")
    with open(path, "w") as handle:
        handle.write(text)
    return path


def build_tiny_model(tmp_path, llm_dir, workspace, monkeypatch, tokenizer_options=None, decoder_options=None, **model_options):
    """(config, model after init_weights, train dataset, test dataset) of the tiny config, built
    inside ``workspace`` (the data configs use relative paths) in a scope of its own."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import visionllm.datasets  # noqa: F401
    import visionllm.models  # noqa: F401
    from visionllm.registry import DATASETS, MODELS
    DefaultScope.get_instance(f"visionllm-test-{id(tmp_path)}", scope_name="visionllm")
    monkeypatch.chdir(workspace)
    cfg = Config.fromfile(write_tiny_config(tmp_path, llm_dir))
    cfg.model.update(model_options)
    cfg.model.image_tokenizer.update(tokenizer_options or {})
    cfg.model.task_decoder.update(decoder_options or {})
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return cfg, model, DATASETS.build(cfg.train_dataloader.dataset), DATASETS.build(cfg.test_dataloader.dataset)


def one_sample_per_task(dataset, tasks):
    """The first item of ``dataset`` of each task in ``tasks``, in that order."""
    found = {}
    for i in range(len(dataset)):
        item = dataset[i]
        found.setdefault(item["data_samples"].task, item)
        if set(tasks) <= set(found):
            return [found[t] for t in tasks]
    raise AssertionError(f"no sample of every task in {tasks}")


def record_passes(model, monkeypatch) -> list:
    """A list that collects each pass of ``model._forward`` from now on as ``(instructions in,
    outputs)``, in the order the passes finish (a pass a prediction runs first finishes first)."""
    passes = []
    forward = model._forward

    def recorded(inputs, samples, mode):
        instructions = [sample.instruction for sample in samples]
        outputs = forward(inputs, samples, mode)
        passes.append((instructions, outputs))
        return outputs
    monkeypatch.setattr(model, "_forward", recorded)
    return passes


def predict_one(model, item):
    """``model``'s prediction for one dataset item (no gradients)."""
    import torch
    from mmengine.dataset import pseudo_collate
    data = model.data_preprocessor(pseudo_collate([item]), False)
    with torch.no_grad():
        [result] = model(**data, mode="predict")
    return result


def item_for_untrained(model, test_set, instruction: str, task: str = "vqa"):
    """The first ``task`` item of ``test_set``, asking ``instruction``, with ``model`` in eval mode
    and its output format taken from the instruction (an untrained model does not write one)."""
    model.eval()
    model.task_decoder.generate_format = False
    item = next(test_set[i] for i in range(len(test_set)) if test_set[i]["data_samples"].task == task)
    item["data_samples"].set_metainfo(dict(instruction=instruction))
    return item
