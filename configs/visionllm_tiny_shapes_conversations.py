# The tiny shapes model evaluated on shapes conversations (ShapesConversationDataset): accuracy per
# turn, where later turns refer back ("and how many of them are red?"). The same questions asked
# as single self-contained turns:
#   python tools/test.py configs/visionllm_tiny_shapes_conversations.py CHECKPOINT \
#       --cfg-options test_dataloader.dataset.standalone=True
_base_ = ["./visionllm_tiny_shapes.py"]

test_dataloader = dict(
    batch_size=4,
    dataset=dict(
        _delete_=True, type="ShapesConversationDataset", data_root="data/shapes/",
        ann_file="annotations/instances_val.json", data_prefix=dict(img_path="images/val/"), test_mode=True,
        pipeline=[
            dict(type="LoadImageRGB"),
            dict(type="ResizeKeepRatio", scale=(192, 192)),
            dict(type="BuildInstruction", sample_categories=False, template_index=0),
            dict(type="PackVisionLLMInputs"),
        ]))
test_evaluator = dict(_delete_=True, type="VQAAccuracy", group_by="turn")
