# The one-run config's relation phase on its own: a trained tiny shapes model (load_from) and only
# its region relations train (visionllm/models/region_relations.py: for an instruction with two or
# more regions, where the last lies from the first, folded by which way the words ask), for 400
# iterations of region questions alone. Instructions with fewer than two regions never reach the
# part, so every other output stays exactly that of the model it starts from. The shipped
# checkpoint's relations were trained this way from the previous shipped file, which has none:
#   git show 2896fbd:checkpoints/visionllm_tiny_shapes.pth > work_dirs/base_without_relations.pth
#   python tools/train.py configs/visionllm_tiny_shapes_region_relations.py \
#       --cfg-options load_from=work_dirs/base_without_relations.pth
# (a file without the part starts it from its zero initialisation, which adds nothing until trained).
_base_ = ["./visionllm_tiny_shapes_onerun.py"]

load_from = "checkpoints/visionllm_tiny_shapes.pth"
max_iters = 400  # the one-run's relation_phase_iters
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters + 1)
# ModulePhaseHook sets every rate itself: the relations' cosine, 0 for the rest (which keeps its
# gradients: a batch without a two-region question reaches no trained weight)
param_scheduler = []
custom_hooks = [
    dict(type="TrainableStateCheckpointHook"),
    dict(type="ModulePhaseHook", module="region_relations", begin=0, lr=5e-3, freeze_rest=False),
]
default_hooks = dict(checkpoint=dict(interval=200, max_keep_ckpts=-1))
train_dataloader = dict(dataset=dict(ratios={{_base_.region_phase_ratios}}))
