# AdamW with linear warm-up then cosine decay, iteration based (the paper schedule: lr 2e-4).
max_iters = 50000
warmup_iters = 500
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
optim_wrapper = dict(
    type="OptimWrapper",
    # mmengine's parameter-wise rules, logged as one summary line (visionllm/engine/optim_constructor.py).
    constructor="SummarisingOptimWrapperConstructor",
    optimizer=dict(type="AdamW", lr=2e-4, weight_decay=0.05, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=1.0),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=warmup_iters),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=warmup_iters, end=max_iters, eta_min_ratio=0.01),
]
