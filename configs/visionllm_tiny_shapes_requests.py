# How well a tiny shapes model understands plain requests (the `request` task): 150 requests in
# wordings training never sees (PlainRequestDataset split="heldout"), five over each of the first
# 30 classic val images; CanonicalFormMetric prints the canonical form's accuracy per task the
# request asks for, and the share answered in the right form (structured vs text).
#   python tools/test.py configs/visionllm_tiny_shapes_requests.py CHECKPOINT
# The varied data's val images instead:
#   --cfg-options test_dataloader.dataset.data_root=data/shapes_varied/
# The fixed training wordings instead: --cfg-options test_dataloader.dataset.split=train (add
# test_dataloader.dataset.composed_share=0.5 for the composed training wordings too).
_base_ = ["./visionllm_tiny_shapes.py"]

test_dataloader = dict(
    batch_size=4,
    dataset=dict(
        _delete_=True, type="PlainRequestDataset", data_root="data/shapes/",
        ann_file="annotations/instances_val.json", refs_file="annotations/refs_val.json",
        data_prefix=dict(img_path="images/val/"), split="heldout", requests_per_image=5, composed_share=0.0,
        indices=150,
        test_mode=True, pipeline={{_base_.test_pipeline}}))
test_evaluator = dict(_delete_=True, type="MultiTaskMetric",
                      task_metrics=dict(request=dict(type="CanonicalFormMetric")))
