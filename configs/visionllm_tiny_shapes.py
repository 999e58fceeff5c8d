# The embedded default: the tiny model on the generated shapes data, all five tasks.
#   python tools/make_shapes.py --out data/shapes
#   python tools/pretrain_backbone_shapes.py --out work_dirs/backbone_shapes
#   python tools/train.py configs/visionllm_tiny_shapes.py \
#       --cfg-options model.image_tokenizer.backbone.checkpoint=work_dirs/backbone_shapes/resnet_body.pth
_base_ = [
    "_base_/models/visionllm_tiny.py",
    "_base_/datasets/shapes_all_tasks.py",
    "_base_/schedules/adamw_cosine.py",
    "_base_/default_runtime.py",
]
max_iters = 3600
warmup_iters = 200
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters + 1)
# The ResNet body starts from the dense shape-kind pretraining above (nothing is downloaded, so there
# are no ImageNet weights). Its norm statistics come from 16-image batches; 2-image batches would
# only add noise, so the norm layers stay frozen and the body learns 10x slower than the new layers.
shapes_classes = ["circle", "square", "triangle", "star", "hexagon", "diamond"]
# The colour words of both shapes styles (the words "what colour is <region>?" is answered with).
shapes_colours = ["red", "green", "blue", "yellow", "purple", "orange", "pink", "brown", "white", "black"]
model = dict(image_tokenizer=dict(backbone=dict(norm_eval=True)),
             # A caption lists the kinds of shape the model's own detector finds (score >= 0.5;
             # of boxes overlapping by IoU > 0.5 only the best), left to right and counted ("two
             # squares and a star"). On the README's 100 caption images against the caption the LLM
             # writes with the undetected kinds banned: CIDEr 26.7 -> 103.2 (classic val), 64.3 ->
             # 76.6 (varied val), 53.9 -> 53.6 (val_heldout), CHAIR_s 26 -> 25, 9 -> 4, 17 -> 19 %.
             # With colours=shapes_colours each kind also gets its "what colour is <region>?"
             # answer when the model gives it probability >= 0.7: CIDEr 192 / 154 / 101 but
             # CHAIR_s 33 / 11 / 51 % (docs/experiments.md, "Captions composed from the detections").
             caption_grounding=dict(categories=shapes_classes, score_threshold=0.5, overlap_iou=0.5, compose=True,
                                    colour_threshold=0.7, count_noun="shape"),
             # Captions and answers never repeat a token bigram: on the README's 100 caption images
             # captions naming one object twice 45 -> 15 %, CIDEr 115.4 -> 121.5, CHAIR_i 57.9 -> 57.2
             # (docs/experiments.md, "Caption honesty").
             # The canonical form of a plain request is written with the request's own words and
             # these (the shapes questions' fixed words): on 150 held-out requests 16.0 -> 41.3 %
             # right (docs/experiments.md, "Canonical forms from the request's words").
             task_decoder=dict(text_constraints=dict(
                 no_repeat_ngram_size=2, request_words=["how many are there", "is there a an", "what color is the"],
                 request_categories=shapes_classes),
                 # Low-rank LLM weights used only while a plain request is rewritten as a canonical
                 # form; the shipped file's were trained alone in the one-run config's request
                 # phase (RequestAdapterPhaseHook): held-out request wordings 41.3 -> 89.3 %, every
                 # other output unchanged (docs/experiments.md, "A request adapter"). A config
                 # without that hook trains them together with everything else, on requests only.
                 request_adapter=dict(rank=16, alpha=32)),
             # For "is <region> left of <region>?" and the like: where the last region lies from the
             # first, folded by which way the words ask, at the instruction's last word. The shipped
             # file's was trained alone in the one-run config's relation phase (ModulePhaseHook);
             # it adds exactly zero until trained and nothing to instructions with fewer than two
             # regions (docs/experiments.md, "Between regions the fold needs no vocabulary").
             region_relations=dict(type="RegionRelations"),
             # For "what colour is <region>?", "Describe <region>." and the like: the region's
             # read-out mapped onto the instruction's last word, where the answer starts. Trained
             # alone in the one-run config's appearance phase; adds exactly zero until trained.
             region_appearance=dict(type="RegionAppearance"),
             # Questions about named objects through the model's own grounding (one grounding
             # pass first; docs/experiments.md, from "Named objects through the model's own
             # grounding" to "Shape and side questions"): "is the A left of the B?" is answered as
             # "is <region> left of <region>?" about the groundings of A and B, "what color is the
             # A?" / "what shape is the A?" as "what colour / shape is <region>?" about A's, "is
             # the A on the left or on the right?" from the centre of A's box, and "is there a
             # red circle?" is "yes" only when the colour and shape answers about the grounding of
             # "the red circle" are red and circle.
             question_grounding=dict(colours=shapes_colours, kinds=shapes_classes),
             # "How many (red) stars are there?" is answered with the number of the model's own
             # detections of stars scoring >= 0.5 (for a colour: whose "what colour is <region>?"
             # answer is red); of detections overlapping by IoU > 0.5 only the best counts, whatever
             # its kind (one object read as two kinds) (docs/experiments.md, "Counting through the
             # model's detections" and "One object counted once").
             question_counting=dict(categories=shapes_classes, colours=shapes_colours, score_threshold=0.5,
                                    overlap_iou=0.5),
             # "The red star" is checked with the colour and shape answers about the grounded box;
             # when they disagree, the best detected star scoring >= 0.5 whose colour answer is red
             # replaces it (docs/experiments.md, "Groundings checked by the region answers").
             # "The leftmost star", "the big star" become the detected star furthest that way, "the
             # star left of the red square" the best detected star left of the grounding of "the
             # red square" (docs/experiments.md, "Extremes among things of a kind from the detections").
             grounding_verification=dict(categories=shapes_classes, colours=shapes_colours, score_threshold=0.5))
# The zero-initialised read-outs (pixels under each token, image tokens inside the LLM layers,
# the instruction-relevance vector) start from nothing: at the base rate the first two were
# still negligible after 600 iterations. The relational alignment and the box refinement are
# new modules trained from scratch on top of a trained model, so they get a higher rate too
# (as does the polygon refinement).
optim_wrapper = dict(optimizer=dict(lr=4e-4, weight_decay=0.01),
                     # bypass_duplicate: the LLM's input and output embeddings are tied (one parameter).
                     paramwise_cfg=dict(custom_keys={"image_tokenizer.backbone.body": dict(lr_mult=0.1),
                                                     "image_tokenizer.token_appearance": dict(lr_mult=10.0),
                                                     "task_decoder.image_readout": dict(lr_mult=10.0),
                                                     "instruction_relevance": dict(lr_mult=10.0),
                                                     "image_tokenizer.relational_alignment": dict(lr_mult=10.0),
                                                     # its direct side weights: at 10x "left" and
                                                     # "right" were still 0.1 apart after 500 iterations
                                                     "image_tokenizer.relational_alignment.name_sides": dict(lr_mult=50.0),
                                                     "image_tokenizer.relational_alignment.word_sides": dict(lr_mult=50.0),
                                                     "task_decoder.box_refinement": dict(lr_mult=5.0),
                                                     "task_decoder.polygon_refinement": dict(lr_mult=5.0)},
                                        bypass_duplicate=True))
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-2, by_epoch=False, begin=0, end=warmup_iters),
    dict(type="CosineAnnealingLR", by_epoch=False, begin=warmup_iters, end=max_iters, eta_min_ratio=0.05),
]
default_hooks = dict(checkpoint=dict(interval=500, max_keep_ckpts=3))
# Training augmentation (visionllm/datasets/transforms/augment.py): photometric distortion
# without hue shifts (colour words are answers), random crops that keep every target true
# (detection / segmentation objects clipped or dropped; caption / VQA crops contain every
# object; grounding and position-naming text uncropped), flips that swap left and right in
# the text; the keep-ratio resize then scales each crop to the model's size.
train_pipeline = [
    dict(type="LoadImageRGB"),
    dict(type="LoadVisionLLMAnnotations"),
    dict(type="PhotometricDistortionRGB", prob=0.5),
    # A region description may name a position among the image's objects: cropped like a caption.
    dict(type="RandomCropWithText", prob=0.5, min_scale=0.6, text_tasks=("caption", "vqa", "region_caption")),
    dict(type="RandomFlipWithText", prob=0.5),
    dict(type="ResizeKeepRatio", scale={{_base_.img_scale}}),
    dict(type="ResamplePolygons", num_points={{_base_.polygon_points}}),
    dict(type="BuildInstruction", max_categories={{_base_.max_categories}}, negative_ratio=1.0,
         sample_categories=True),
    dict(type="PackVisionLLMInputs"),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
# The inference API feeds raw images through the same resize as evaluation.
infer_pipeline = [
    dict(type="ResizeKeepRatio", scale={{_base_.img_scale}}),
    dict(type="PackVisionLLMInputs"),
]
# No validation during training (evaluation is tools/test.py's job; the CPU budget goes to training).
val_dataloader = None
val_cfg = None
val_evaluator = None
