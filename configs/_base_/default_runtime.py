# Runtime settings shared by every VisionLLM config.
default_scope = "visionllm"
custom_imports = dict(imports=["visionllm.models", "visionllm.datasets", "visionllm.evaluation", "visionllm.engine"],
                      allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=10),
    param_scheduler=dict(type="ParamSchedulerHook"),
    # Checkpoints are renamed into place (atomic) and the last few are kept.
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=500, max_keep_ckpts=3,
                    backend_args=dict(backend="atomic_local")),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
# Leave the weights that the embedded / local pretrained packages provide out of checkpoints.
custom_hooks = [dict(type="TrainableStateCheckpointHook")]

env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
               dist_cfg=dict(backend="nccl"))
# The package's one drawer (tools/test.py --show-dir and the inferencer); scalars go to vis_data/.
visualizer = dict(type="VisionLLMVisualizer", vis_backends=[dict(type="LocalVisBackend")])
log_processor = dict(type="LogProcessor", window_size=10, by_epoch=False)
log_level = "INFO"
# A batch of caption / VQA samples leaves the structured-output parts unused (and vice versa).
find_unused_parameters = True
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
