"""configs/visionllm_tiny_shapes_requests.py: plain requests over the val images in wordings
training never sees, scored by CanonicalFormMetric."""
import json
import os

from mmengine.registry import init_default_scope
from repo_paths import REPO

CONFIG = os.path.join(REPO, "configs", "visionllm_tiny_shapes_requests.py")


def test_requests_config_reads_heldout_wordings_of_the_val_images(tiny_workspace, monkeypatch):
    from visionllm.apis.runner import load_config
    from visionllm.registry import DATASETS
    monkeypatch.chdir(tiny_workspace)
    init_default_scope("visionllm")
    cfg = load_config(CONFIG)
    heldout = DATASETS.build(cfg.test_dataloader.dataset)
    train_cfg = dict(cfg.test_dataloader.dataset.to_dict(), split="train", indices=None, requests_per_image=20)
    train = DATASETS.build(train_cfg)
    assert len(heldout) > 0 and {heldout[i]["data_samples"].task for i in range(len(heldout))} == {"request"}
    assert {heldout.get_data_info(i)["img_path"] for i in range(len(heldout))} <= {
        os.path.join("data/shapes/images/val", name) for name in os.listdir("data/shapes/images/val")}
    heldout_templates = {heldout.get_data_info(i)["template"] for i in range(len(heldout))}
    train_templates = {train.get_data_info(i)["template"] for i in range(len(train))}
    assert heldout_templates and not heldout_templates & train_templates
    metric = cfg.test_evaluator.task_metrics.request
    assert cfg.test_evaluator.type == "MultiTaskMetric" and metric.type == "CanonicalFormMetric"


def test_tools_test_out_dumps_the_requests(tmp_path):
    """``tools/test.py --out`` points the metric at a file of what the model understood per request."""
    from tools.test import set_outfile_prefix
    from visionllm.apis.runner import load_config
    from visionllm.registry import METRICS
    init_default_scope("visionllm")
    cfg = load_config(CONFIG)
    evaluator = METRICS.build(set_outfile_prefix(cfg.test_evaluator, str(tmp_path)))
    evaluator.dataset_meta = {}
    evaluator.process(None, [dict(task="request", img_id=1, instruction="x", pred_text="caption",
                                  target_text="caption")])
    evaluator.evaluate(1)
    assert json.loads((tmp_path / "request.request.json").read_text())[0]["correct"] is True
