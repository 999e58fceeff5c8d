# The refinement phase, the last step of the shipped checkpoint's recipe: the box and polygon
# refinements (the Deformable-DETR steps that correct each decoded box and vertex on the image
# tokenizer's memory, four steps each in the tiny model) trained on detection, segmentation and
# grounding of both renderers, every other weight held still: the LLM's answers, its category
# scores and every text task stay exactly as loaded; only where boxes and outlines sit changes.
# From a file with two steps each (the classic renderer phase's output), the third and fourth
# start as no correction at all. 1200 iterations, rate 1e-4 cosine to 1e-5, about 18 min
# (docs/experiments.md, "Deeper refinements"):
#   python tools/train.py configs/visionllm_tiny_shapes_refinement_phase.py --work-dir work_dirs/refinement_phase
_base_ = ["./visionllm_tiny_shapes_classic_phase.py"]

load_from = "work_dirs/classic_phase/visionllm_tiny_shapes.pth"
max_iters = 1200
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters + 1)
_refinements = ["task_decoder.box_refinement", "task_decoder.polygon_refinement"]
# the phase hook sets every rate: the refinements' cosine, 0 for everything else
optim_wrapper = dict(optimizer=dict(lr=1e-4),
                     paramwise_cfg=dict(custom_keys={name: dict(lr_mult=1.0) for name in _refinements}))
custom_hooks = [dict(type="TrainableStateCheckpointHook"),
                dict(type="ModulePhaseHook", module=_refinements, begin=0, lr=1e-4, eta_min_ratio=0.1)]
default_hooks = dict(checkpoint=dict(interval=400, max_keep_ckpts=3))
train_dataloader = dict(dataset=dict(
    #       det   seg   grd   cap  vqa  r-cap r-vqa r-cls conv req  phase req  classic det seg  grd  vqa
    ratios=[0.25, 0.25, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0] + [0.15, 0.15, 0.1, 0.0]))
