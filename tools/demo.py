"""The main job on the embedded default model and data (what `make demo` runs).

1. writes the shapes dataset if it is not there (tools/make_shapes.py);
2. evaluates the shipped checkpoint with tools/test.py on a slice of the val split of every task
   (the full val split: `python tools/test.py CONFIG CHECKPOINT`);
3. runs the inference API on a few val images, one instruction per task, then a question about a
   region, one about where two regions lie from each other, a two-turn conversation and plain
   requests (the model decides the task) on the first image, pictures in outputs/;
4. trains a fresh model for a few dozen iterations to show the loss falling, writing a checkpoint.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

CONFIG = osp.join(REPO, "configs", "visionllm_tiny_shapes.py")
CHECKPOINT = osp.join(REPO, "checkpoints", "visionllm_tiny_shapes.pth")
DATA = osp.join(REPO, "data", "shapes")
TASK_DATASETS = ("detection", "segmentation", "grounding", "caption", "vqa")  # order of the test loader
REGION_DATASETS = ("region_caption", "region_vqa", "region_classification")  # then these
REGION_SAMPLES = 10  # a glimpse; the README's region numbers are on 60 samples each


def banner(text: str) -> None:
    print(f"\n{'=' * 100}\n== {text}\n{'=' * 100}", flush=True)


def run(cmd) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def ensure_data(num_train: int) -> None:
    if osp.isfile(osp.join(DATA, "annotations", "instances_val.json")):
        print(f"shapes data found in {DATA}")
        return
    run([sys.executable, "tools/make_shapes.py", "--out", DATA, "--num-train", str(num_train), "--workers", "2"])


def evaluate(samples_per_task: int) -> None:
    options = [f"test_dataloader.dataset.datasets.{i}.indices={samples_per_task}" for i in range(len(TASK_DATASETS))]
    options += [f"test_dataloader.dataset.datasets.{len(TASK_DATASETS) + i}.indices={REGION_SAMPLES}"
                for i in range(len(REGION_DATASETS))]
    # Progress every 50 samples (4 lines for the default 200) keeps the step on one screen.
    options.append("default_hooks.logger.interval=50")
    run([sys.executable, "tools/test.py", CONFIG, CHECKPOINT, "--work-dir", "work_dirs/demo_test",
         "--out", "outputs/results", "--cfg-options", *options])


def infer(num_images: int) -> None:
    from visionllm.apis.inferencer import VisionLLMInferencer
    from visionllm.tasks import build_instruction
    import random

    with open(osp.join(DATA, "annotations", "instances_val.json")) as handle:
        coco = json.load(handle)
    names = [c["name"] for c in coco["categories"]]
    with open(osp.join(DATA, "annotations", "refs_val.json")) as handle:
        refs = json.load(handle)
    rng = random.Random(0)
    inferencer = VisionLLMInferencer(CONFIG, CHECKPOINT)
    for image in coco["images"][:num_images]:
        path = osp.join(DATA, "images", "val", image["file_name"])
        expression = next((r["sentences"][0]["raw"] for r in refs if r["image_id"] == image["id"]), "the shape")
        instructions = {
            "detection": build_instruction("detection", rng, categories=names, template_index=0).text,
            "segmentation": build_instruction("segmentation", rng, categories=names, num_points=16,
                                              template_index=0).text,
            "grounding": build_instruction("grounding", rng, expression=expression, template_index=0).text,
            "caption": build_instruction("caption", rng, template_index=0).text,
            "vqa": build_instruction("vqa", rng, question="how many shapes are there?", template_index=0).text,
        }
        for task, instruction in instructions.items():
            start = time.perf_counter()
            result = inferencer(path, instruction)
            elapsed = time.perf_counter() - start
            out_file = osp.join(REPO, "outputs", f"{osp.splitext(image['file_name'])[0]}_{task}.png")
            inferencer.visualize(path, result, out_file)
            print(f"{image['file_name']} {task:<12} {elapsed:5.2f}s  {_summary(result)[:90]}  -> {osp.relpath(out_file, REPO)}")
    first = coco["images"][0]
    path = osp.join(DATA, "images", "val", first["file_name"])
    boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == first["id"]][:2]
    region_and_conversation(inferencer, path, [[x, y, x + w, y + h] for x, y, w, h in boxes], names)
    plain_requests(inferencer, path)


def _summary(result) -> str:
    if result.text is not None:
        return repr(result.text)
    return ", ".join(f"{n} {s:.2f}" for n, s in zip(result.names, result.scores) if s >= 0.3) or "-"


def region_and_conversation(inferencer, path: str, regions: list, names: list) -> None:
    """A question about one object given as a box, one about where two boxes lie from each other
    (when the image has two objects), and a follow-up conversation, with pictures."""
    from visionllm.apis.conversation import Conversation
    from visionllm.instructions import format_category_set

    stem = osp.splitext(osp.basename(path))[0]
    questions = [("region", "<image> What colour is <region>?", regions[:1])]
    if len(regions) > 1:
        questions.append(("relation", "<image> Is <region> left of <region>?", regions[:2]))
    for name, instruction, boxes in questions:
        result = inferencer(path, instruction, regions=boxes)
        out_file = inferencer.visualize(path, result, osp.join(REPO, "outputs", f"{stem}_{name}.png"))
        where = ", ".join(str([round(v) for v in box]) for box in boxes)
        print(f"{osp.basename(path)} {result.task:<12} {instruction[8:]!r} regions {where}: {_summary(result)}  "
              f"-> {osp.relpath(out_file, REPO)}")
    conversation = Conversation(inferencer, path)
    turns = [f"Detect {format_category_set(names)} in <image>. Answer as a list of (c, x1, y1, x2, y2).",
             "How many shapes are there?"]
    for k, question in enumerate(turns, 1):
        result = conversation.ask(question)
        out_file = inferencer.visualize(path, result, osp.join(REPO, "outputs", f"{stem}_conversation_turn{k}.png"))
        print(f"conversation turn {k} ({result.task}): {question[:60]!r} -> {_summary(result)[:80]}  "
              f"-> {osp.relpath(out_file, REPO)}")


def short_training(iters: int) -> None:
    work_dir = "work_dirs/demo_train"
    run([sys.executable, "tools/train.py", CONFIG, "--work-dir", work_dir, "--cfg-options",
         f"train_cfg.max_iters={iters}", f"train_cfg.val_interval={iters + 1}",
         "default_hooks.logger.interval=5", f"default_hooks.checkpoint.interval={iters}",
         "param_scheduler=[]", "randomness.seed=1"])
    scalars = sorted(glob_scalars(osp.join(REPO, work_dir)))
    if scalars:
        with open(scalars[-1]) as handle:
            rows = [json.loads(line) for line in handle if '"loss"' in line]
        print(f"loss: first logged {rows[0]['loss']:.3f} (iter {rows[0]['step']}) -> "
              f"last logged {rows[-1]['loss']:.3f} (iter {rows[-1]['step']})")


def glob_scalars(work_dir: str):
    import glob
    return glob.glob(osp.join(work_dir, "*", "vis_data", "scalars.json"))


def plain_requests(inferencer, path: str) -> None:
    """Requests in a user's own words: the model writes the canonical form, then follows it."""
    from visionllm.apis.inputs import InputError

    stem = osp.splitext(osp.basename(path))[0]
    requests = ["Please locate the red square in <image>.", "Find all stars and hexagons in <image>.",
                "How many triangles are in <image>?", "<image> Is the hexagon orange?", "Translate this into French."]
    for k, request in enumerate(requests, 1):
        try:
            result = inferencer(path, request)
        except InputError as error:  # no task serves the request
            print(f"plain request {request!r} -> refused: {str(error)[:110]}")
            continue
        out_file = inferencer.visualize(path, result, osp.join(REPO, "outputs", f"{stem}_request{k}.png"))
        print(f"plain request {request!r} -> canonical {result.canonical!r} ({result.understanding}): "
              f"{_summary(result)[:70]}  -> {osp.relpath(out_file, REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples-per-task", type=int, default=40, help="val samples evaluated per task")
    parser.add_argument("--images", type=int, default=2, help="val images for the inference pictures")
    parser.add_argument("--train-iters", type=int, default=30)
    parser.add_argument("--num-train", type=int, default=2000, help="train images if the data must be made")
    args = parser.parse_args()
    # The steps below load the model three times; its weight-loading progress bars (transformers'
    # and the GGUF reader's tqdm) say nothing in a demo. Set before transformers is imported.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    if not osp.isfile(CHECKPOINT):
        raise SystemExit(f"error: the shipped checkpoint is missing: {CHECKPOINT}")
    os.makedirs(osp.join(REPO, "outputs"), exist_ok=True)
    banner("1/4 embedded shapes data")
    ensure_data(args.num_train)
    banner(f"2/4 tools/test.py on the shipped checkpoint ({args.samples_per_task} val samples per task)")
    evaluate(args.samples_per_task)
    banner("3/4 inference API: one instruction per task, a region, a conversation, plain requests "
           "(pictures in outputs/)")
    infer(args.images)
    banner(f"4/4 a short training run ({args.train_iters} iterations from scratch)")
    short_training(args.train_iters)


if __name__ == "__main__":
    main()
