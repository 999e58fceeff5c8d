# The one-run tiny model tested on the varied shapes data's val_heldout split (data/shapes_varied,
# tools/make_shapes.py --style varied):
#   python tools/test.py configs/visionllm_tiny_shapes_onerun_varied_heldout.py CHECKPOINT
_base_ = ["./visionllm_tiny_shapes_onerun.py"]
test_dataloader = {{_base_.varied_heldout_dataloader}}
test_evaluator = {{_base_.varied_heldout_evaluator}}
