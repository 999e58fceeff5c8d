# The one-run config's appearance phase on its own: a trained tiny shapes model (load_from) and only
# its region appearance trains (visionllm/models/region_appearance.py: for an instruction with
# exactly one region, the image token nearest it mapped onto the instruction's last word), for 600
# iterations of region questions alone. Instructions without exactly one region never reach the
# part, so every other output stays exactly that of the model it starts from. The shipped
# checkpoint's part was trained this way from the previous shipped file, which has none:
#   git show 65a473a:checkpoints/visionllm_tiny_shapes.pth > work_dirs/base_without_appearance.pth
#   python tools/train.py configs/visionllm_tiny_shapes_region_appearance.py \
#       --cfg-options load_from=work_dirs/base_without_appearance.pth
# (a file without the part starts it from its zero initialisation, which adds nothing until trained).
_base_ = ["./visionllm_tiny_shapes_onerun.py"]

load_from = "checkpoints/visionllm_tiny_shapes.pth"
max_iters = 600  # the one-run's appearance_phase_iters
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters + 1)
# ModulePhaseHook sets every rate itself: the part's cosine, 0 for the rest (which keeps its
# gradients: a batch of two-region questions reaches no trained weight)
param_scheduler = []
custom_hooks = [
    dict(type="TrainableStateCheckpointHook"),
    dict(type="ModulePhaseHook", module="region_appearance", begin=0, lr=1e-2, freeze_rest=False),
]
default_hooks = dict(checkpoint=dict(interval=200, max_keep_ckpts=-1))
train_dataloader = dict(dataset=dict(ratios={{_base_.region_phase_ratios}}))
