# The one-run config's request phase on its own: a trained tiny shapes model (load_from) and only
# its request adapter trains (low-rank LLM weights used only while it rewrites a plain request as
# a canonical form), for 2000 iterations of plain requests alone, half in composed wordings. Every
# other task runs with the adapter off, so its outputs stay exactly those of the model it starts
# from (visionllm/models/llm/request_adapter.py). The shipped checkpoint's adapter was trained
# this way from the previous shipped file, which has no adapter:
#   git show aa00a7e:checkpoints/visionllm_tiny_shapes.pth > work_dirs/base_without_adapter.pth
#   python tools/train.py configs/visionllm_tiny_shapes_request_adapter.py \
#       --cfg-options load_from=work_dirs/base_without_adapter.pth
# (load_from a file that already holds an adapter continues training it; a missing adapter starts
# from zero, which changes nothing until it trains.)
_base_ = ["./visionllm_tiny_shapes_onerun.py"]

load_from = "checkpoints/visionllm_tiny_shapes.pth"
max_iters = 2000  # the one-run's request_phase_iters
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters + 1)
# RequestAdapterPhaseHook sets every rate itself: the adapter's cosine, 0 for the rest
param_scheduler = []
custom_hooks = [
    dict(type="TrainableStateCheckpointHook"),
    dict(type="RequestAdapterPhaseHook", begin=0, lr=1e-3),
]
default_hooks = dict(checkpoint=dict(interval=500, max_keep_ckpts=-1))
# the one-run mixture's last dataset alone (the phase's requests)
train_dataloader = dict(dataset=dict(ratios=[0.0] * 10 + [1.0]))
