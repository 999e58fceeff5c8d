# The tiny shapes model from nothing in ONE tools/train.py run: the ResNet body's dense shape-kind
# pretraining is the run's first stage (ShapeKindPretrainingHook, written to
# <work_dir>/backbone_pretraining/resnet_body.pth and skipped once that file exists), then two
# cosine cycles over the varied shapes data: the eight shapes tasks plus conversations and plain
# requests; then the request phase: 2000 iterations of plain requests alone that train only the
# request adapter (the LLM's low-rank weights for reading requests; no other task's output moves);
# then the relation phase: 400 iterations of region questions alone that train only the region
# relations (visionllm/models/region_relations.py; no instruction with fewer than two regions moves);
# then the appearance phase: 600 iterations of region questions alone that train only the region
# appearance (visionllm/models/region_appearance.py; no instruction without exactly one region moves).
# This is the first step of the shipped checkpoint's recipe (docs/training_and_evaluation.md; it
# ran with two refinement steps, the tiny config builds four since).
#   python tools/make_shapes.py --out data/shapes_varied --style varied \
#       --num-train 2000 --num-val 200 --num-heldout 200 --seed 0
#   python tools/train.py configs/visionllm_tiny_shapes_onerun.py
# Evaluation: this config tests on the classic val split (data/shapes, the README's numbers);
# visionllm_tiny_shapes_onerun_varied_val.py / _varied_heldout.py test on the varied val and
# val_heldout splits (the loaders are defined here, as varied_*).
_base_ = ["./visionllm_tiny_shapes.py"]

varied_root = "data/shapes_varied/"
# Warmup, a first cosine cycle to 8000 iterations, then a second from half the peak rate to
# 16000: 8000 iterations left every task still improving (docs/experiments.md, the full one-run).
# ExtendedScheduleHook lets a run that finished the first cycle under an 8000-iteration config
# resume into this one exactly as a run from nothing would go on.
first_cycle_iters = 8000
main_iters = 16000
# The request phase: composed wordings at half its requests reached 89 % on held-out wordings
# where the fixed templates alone reached 65 % (docs/experiments.md, "A request adapter").
request_phase_iters = 2000
# The relation phase: relation questions between two regions 47-50 % -> 100 % on every split in
# 400 iterations (docs/experiments.md, "Between regions the fold needs no vocabulary").
relation_phase_iters = 400
# The appearance phase: colour questions about one region 6-13 % -> 82-93 % on every split in 600
# iterations (docs/experiments.md, "The region's own token at the answer").
appearance_phase_iters = 600
max_iters = main_iters + request_phase_iters + relation_phase_iters + appearance_phase_iters
warmup_iters = 200
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters + 1)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-2, by_epoch=False, begin=0, end=warmup_iters),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=warmup_iters, end=first_cycle_iters, eta_min_ratio=0.05),
    dict(type="CosineRestartLR", by_epoch=False, begin=first_cycle_iters, end=main_iters,
         periods=[main_iters - first_cycle_iters], restart_weights=[0.5], eta_min_ratio=0.05),
]
# the rates of the request adapter, the region relations and the region appearance are set by their
# phase hooks: 0 outside their phases
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={"task_decoder.request_adapter": dict(lr_mult=1.0),
                                                     "region_relations": dict(lr_mult=1.0),
                                                     "region_appearance": dict(lr_mult=1.0)}))
# The chain's step 1 (tools/pretrain_backbone_shapes.py --iters 2000, batch 16), on the varied data.
# The mixture's phases and the last three hooks are the request phase (the mixture's last dataset
# alone, the adapter alone), the relation phase (region questions alone, the relations alone) and
# the appearance phase (region questions alone, the appearance alone).
relation_phase_begin = main_iters + request_phase_iters
appearance_phase_begin = relation_phase_begin + relation_phase_iters
region_phase_ratios = [0.0] * 6 + [1.0] + [0.0] * 4  # the region questions (r-vqa) alone


def _onerun_hooks(num_later_datasets=0):
    """The run's hooks; ``num_later_datasets``: datasets a config appends to the mixture after the
    phase's request dataset (at ratio 0 in every phase)."""
    later = [0.0] * num_later_datasets
    return [
        dict(type="TrainableStateCheckpointHook"),
        dict(type="ShapeKindPretrainingHook", data_root=varied_root, iters=2000, batch_size=16, lr=1e-3, size=192,
             eval_interval=500, seed=0),
        dict(type="ExtendedScheduleHook"),
        dict(type="MixtureScheduleHook", phases=[dict(begin=main_iters, ratios=[0.0] * 10 + [1.0] + later),
                                                 dict(begin=relation_phase_begin, ratios=region_phase_ratios + later)]),
        dict(type="RequestAdapterPhaseHook", begin=main_iters, end=relation_phase_begin, lr=1e-3),
        dict(type="ModulePhaseHook", module="region_relations", begin=relation_phase_begin,
             end=appearance_phase_begin, lr=5e-3, freeze_rest=False),
        dict(type="ModulePhaseHook", module="region_appearance", begin=appearance_phase_begin, lr=1e-2,
             freeze_rest=False),
    ]


custom_hooks = _onerun_hooks()


def _shapes_datasets(split, pipeline, test_mode, caption_styles=True):
    ann = f"annotations/{{}}_{split}.json"
    common = dict(data_root=varied_root, data_prefix=dict(img_path=f"images/{split}/"), pipeline=pipeline,
                  test_mode=test_mode)
    return [
        dict(type="CocoInstancesDataset", ann_file=ann.format("instances"), task="detection",
             filter_empty_gt=not test_mode, **common),
        dict(type="CocoInstancesDataset", ann_file=ann.format("instances"), task="segmentation",
             filter_empty_gt=not test_mode, **common),
        dict(type="RefCocoDataset", ann_file=ann.format("instances"), refs_file=ann.format("refs"), split=split,
             **common),
        dict(type="CocoCaptionDataset", ann_file=ann.format("captions"), boxes_file=ann.format("instances"),
             read_styles=caption_styles, **common),
        dict(type="VQAv2Dataset", ann_file=ann.format("vqa_questions"), answers_file=ann.format("vqa_annotations"),
             image_info_file=ann.format("instances"), boxes_file=ann.format("instances"), **common),
        *[dict(type="ShapesRegionDataset", task=task, ann_file=ann.format("instances"), refs_file=ann.format("refs"),
               **common) for task in ("region_caption", "region_vqa", "region_classification")],
    ]


def _varied_metrics(split):
    instances = f"{varied_root}annotations/instances_{split}.json"
    return dict(
        type="MultiTaskMetric",
        task_metrics=dict(
            detection=dict(type="VisionLLMCocoMetric", ann_file=instances, metric="bbox", task="detection"),
            segmentation=dict(type="VisionLLMCocoMetric", ann_file=instances, metric=["bbox", "segm"],
                              task="segmentation"),
            grounding=dict(type="RefCocoMetric"),
            caption=dict(type="CaptionMetric", ann_file=instances),
            vqa=dict(type="VQAAccuracy"),
            region_caption=dict(type="RegionCaptionMetric"),
            region_vqa=dict(type="RegionVQAAccuracy"),
            region_classification=dict(type="RegionClassificationAccuracy"),
        ))


_train = dict(data_root=varied_root, data_prefix=dict(img_path="images/train/"),
              pipeline={{_base_.train_pipeline}}, test_mode=False)
# Shares: the chain's later steps found captions and VQA need more than their sample cost
# suggests (docs/model_card.md, steps 8-11); grounding got 30-40 % there too. The three region
# tasks, the conversations (VQA turns with history) and the plain requests get small shares.
# Every caption is asked for with the plain phrasings (no style-tied instructions), and batches
# mix tasks: a run that tied caption styles to instructions, drew a fifth of its samples from the
# classic renderer and gave plain requests 5 % was behind this recipe at 12000 iterations on
# varied grounding, captions, VQA and region captions; one task per batch had learned about half
# as much by iteration 3000 (docs/experiments.md, "The second one-run").
train_dataloader = dict(batch_size=4, dataset=dict(
    datasets=[
        *_shapes_datasets("train", {{_base_.train_pipeline}}, False, caption_styles=False),
        dict(type="ShapesConversationDataset", ann_file="annotations/instances_train.json", **_train),
        # composed_share=0: the fixed request templates alone, as the shipped checkpoint was trained
        dict(type="PlainRequestDataset", ann_file="annotations/instances_train.json",
             refs_file="annotations/refs_train.json", split="train", requests_per_image=8, composed_share=0.0,
             **_train),
        # the request phase's data: half of the requests in composed wordings. At ratio 0 before the
        # phase, it leaves the first 16000 iterations' draws as they were without it.
        dict(type="PlainRequestDataset", ann_file="annotations/instances_train.json",
             refs_file="annotations/refs_train.json", split="train", requests_per_image=8, composed_share=0.5,
             **_train),
    ],
    #       det   seg   grd  cap   vqa   r-cap r-vqa r-cls conv  req   phase req
    ratios=[0.16, 0.14, 0.2, 0.18, 0.18, 0.03, 0.03, 0.02, 0.03, 0.03, 0.0]))

# The classic renderer's train split (data/shapes: flat colours on a noisy checkerboard) for
# detection, segmentation, grounding and VQA; its captions list colours in a style of their own,
# which the caption task is not trained on. configs/visionllm_tiny_shapes_classic_phase.py and
# visionllm_tiny_shapes_onerun_classic.py draw these after the one-run mixture's datasets.
_classic_ann = "annotations/{}_train.json"
_classic = dict(data_root="data/shapes/", data_prefix=dict(img_path="images/train/"),
                pipeline={{_base_.train_pipeline}}, test_mode=False)
classic_train_datasets = [
    dict(type="CocoInstancesDataset", ann_file=_classic_ann.format("instances"), task="detection",
         filter_empty_gt=True, **_classic),
    dict(type="CocoInstancesDataset", ann_file=_classic_ann.format("instances"), task="segmentation",
         filter_empty_gt=True, **_classic),
    dict(type="RefCocoDataset", ann_file=_classic_ann.format("instances"), refs_file=_classic_ann.format("refs"),
         split="train", **_classic),
    dict(type="VQAv2Dataset", ann_file=_classic_ann.format("vqa_questions"),
         answers_file=_classic_ann.format("vqa_annotations"), image_info_file=_classic_ann.format("instances"),
         boxes_file=_classic_ann.format("instances"), **_classic),
]
with_classic_train_datasets = train_dataloader["dataset"]["datasets"] + classic_train_datasets
with_classic_train_hooks = _onerun_hooks(len(classic_train_datasets))

# Test on the varied splits: the two small configs named above set test_dataloader / test_evaluator
# to these.
_varied_test = dict(batch_size=1, num_workers=0, persistent_workers=False, drop_last=False,
                    sampler=dict(type="DefaultSampler", shuffle=False), collate_fn=dict(type="pseudo_collate"))
varied_val_dataloader = dict(_delete_=True, **_varied_test, dataset=dict(
    type="MultiTaskDataset", datasets=_shapes_datasets("val", {{_base_.test_pipeline}}, True)))
varied_val_evaluator = dict(_delete_=True, **_varied_metrics("val"))
varied_heldout_dataloader = dict(_delete_=True, **_varied_test, dataset=dict(
    type="MultiTaskDataset", datasets=_shapes_datasets("val_heldout", {{_base_.test_pipeline}}, True)))
varied_heldout_evaluator = dict(_delete_=True, **_varied_metrics("val_heldout"))
