# The one-run recipe with the classic renderer in the main mixture (a candidate for the shipped
# checkpoint's recipe): visionllm_tiny_shapes_onerun.py, every stage, schedule and phase the same,
# but 15 % of the main mixture's samples come from the classic renderer's train split
# (data/shapes: detection, segmentation, grounding and VQA), taken from the same tasks' varied
# shares, so every task keeps its share of the mixture and captions stay the varied data's alone.
# The phases draw only the one-run's datasets.
#   python tools/make_shapes.py --out data/shapes
#   python tools/make_shapes.py --out data/shapes_varied --style varied --num-train 2000 --num-val 200 --num-heldout 200 --seed 0
#   python tools/train.py configs/visionllm_tiny_shapes_onerun_classic.py   # --resume after an interruption
_base_ = ["./visionllm_tiny_shapes_onerun.py"]

custom_hooks = {{_base_.with_classic_train_hooks}}
# the one-run's shares (a config cannot compute with its base's values; a test checks they agree),
# with detection, segmentation, grounding and VQA each split between the renderers
train_dataloader = dict(dataset=dict(
    datasets={{_base_.with_classic_train_datasets}},
    #       det   seg   grd    cap   vqa    r-cap r-vqa r-cls conv  req   phase req
    ratios=[0.12, 0.11, 0.155, 0.18, 0.145, 0.03, 0.03, 0.02, 0.03, 0.03, 0.0,
            # classic det, seg, grd, vqa
            0.04, 0.03, 0.045, 0.035]))
