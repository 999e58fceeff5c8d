# An experiment toward the next retraining, not the shipped model: the shipped checkpoint with a
# ReferentReadout (each word of a question gets the image tokens its phrase names, with their
# position), fine-tuned on the varied VQA questions alone for 800 iterations at a constant
# learning rate; tested on the varied val split. docs/experiments.md ("Answers that read where
# the named object is") compares it with the same fine-tune without the read-out.
#   python tools/train.py configs/visionllm_tiny_shapes_vqa_referents.py
#   python tools/test.py configs/visionllm_tiny_shapes_vqa_referents.py \
#       work_dirs/visionllm_tiny_shapes_vqa_referents/iter_800.pth --cfg-options ...   # README subsets
_base_ = ["./visionllm_tiny_shapes_onerun.py"]

load_from = "checkpoints/visionllm_tiny_shapes.pth"
model = dict(referent_readout=dict(type="ReferentReadout"))
train_cfg = dict(type="IterBasedTrainLoop", max_iters=800, val_interval=801)
param_scheduler = []
custom_hooks = [dict(type="TrainableStateCheckpointHook")]
optim_wrapper = dict(optimizer=dict(lr=4e-5),
                     paramwise_cfg=dict(custom_keys={"referent_readout": dict(lr_mult=10.0)}))
# only the VQA dataset of the one-run mixture (index 4)
train_dataloader = dict(dataset=dict(ratios=[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]))
test_dataloader = {{_base_.varied_val_dataloader}}
test_evaluator = {{_base_.varied_val_evaluator}}
