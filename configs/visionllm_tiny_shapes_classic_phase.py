# The classic renderer phase, the second step of the shipped checkpoint's recipe: the one-run
# config's published output (load_from) fine-tuned for 1200 iterations on the one-run mixture
# (60 % of the samples, its own shares inside) plus the classic renderer's train split
# (data/shapes, 40 %: detection, segmentation, grounding and VQA in the one-run's proportions
# among them), rate 5e-5 after a 50-iteration warmup, cosine to 5e-6. The request adapter, the
# region relations and the region appearance stay as loaded (rate 0). It lifts the classic
# renderer's boxes, groundings, answers, captions and conversations, keeps the varied splits
# within the ship rule's margins and costs region captioning 15-18 CIDEr (docs/experiments.md,
# "The classic renderer phase, shipped"):
#   python tools/make_shapes.py --out data/shapes
#   python tools/train.py configs/visionllm_tiny_shapes_onerun.py --work-dir work_dirs/onerun
#   python tools/publish_checkpoint.py configs/visionllm_tiny_shapes_onerun.py \
#       work_dirs/onerun/iter_19000.pth work_dirs/onerun/visionllm_tiny_shapes_onerun.pth
#   python tools/train.py configs/visionllm_tiny_shapes_classic_phase.py --work-dir work_dirs/classic_phase
# The shipped file's one-run and classic phase ran with two refinement steps each (the tiny config
# builds four since; pin two with --cfg-options model.task_decoder.box_refinement.num_layers=2
# model.task_decoder.polygon_refinement.num_layers=2); visionllm_tiny_shapes_refinement_phase.py follows.
_base_ = ["./visionllm_tiny_shapes_onerun.py"]

load_from = "work_dirs/onerun/visionllm_tiny_shapes_onerun.pth"
max_iters = 1200
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters + 1)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=50, end=max_iters, eta_min_ratio=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=5e-5),
                     paramwise_cfg=dict(custom_keys={"task_decoder.request_adapter": dict(lr_mult=0.0),
                                                     "region_relations": dict(lr_mult=0.0),
                                                     "region_appearance": dict(lr_mult=0.0)}))
custom_hooks = [dict(type="TrainableStateCheckpointHook")]
default_hooks = dict(checkpoint=dict(interval=400, max_keep_ckpts=3))
_classic_share = 0.4
# the one-run mixture's ratios (a config cannot compute with its base's values; a test checks they agree)
_onerun_ratios = [0.16, 0.14, 0.2, 0.18, 0.18, 0.03, 0.03, 0.02, 0.03, 0.03, 0.0]
_classic_ratios = [0.16, 0.14, 0.2, 0.18]  # the one-run's detection, segmentation, grounding, VQA
train_dataloader = dict(dataset=dict(
    datasets={{_base_.with_classic_train_datasets}},
    ratios=[r * (1 - _classic_share) for r in _onerun_ratios]
    + [_classic_share * r / sum(_classic_ratios) for r in _classic_ratios]))
