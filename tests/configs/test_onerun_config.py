"""configs/visionllm_tiny_shapes_onerun.py on a few generated images: every training dataset of
its mixture and every test dataset of its varied-split configs yields samples through its
pipeline, and a real ``runner.train()`` of two iterations runs the backbone stage first and
trains from the pretrained body it wrote."""
import os

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from repo_paths import REPO

from visionllm.datasets.shapes import write_shapes_dataset

CONFIGS = os.path.join(REPO, "configs")
ONERUN = os.path.join(CONFIGS, "visionllm_tiny_shapes_onerun.py")
ITERS = 2
# the last dataset is the request phase's (plain requests, half in composed wordings)
TRAIN_TASKS = ["detection", "segmentation", "grounding", "caption", "vqa", "region_caption", "region_vqa",
               "region_classification", "vqa", "request", "request"]
TEST_TASKS = TRAIN_TASKS[:8]
# the classic renderer's datasets that the classic configs append to the mixture
CLASSIC_TASKS = ["detection", "segmentation", "grounding", "vqa"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def varied_workspace(tmp_path_factory):
    """A folder holding a small ``data/shapes_varied`` (train, val and val_heldout), the relative
    path the config reads."""
    root = tmp_path_factory.mktemp("onerun_workspace")
    write_shapes_dataset(str(root / "data" / "shapes_varied"), num_train=10, num_val=3, seed=4, style="varied",
                         num_heldout=3)
    write_shapes_dataset(str(root / "data" / "shapes"), num_train=6, num_val=2, seed=4)  # the classic phase's data
    return str(root)


@pytest.fixture
def in_workspace(varied_workspace):
    cwd = os.getcwd()
    os.chdir(varied_workspace)
    try:
        yield varied_workspace
    finally:
        os.chdir(cwd)


def _build_mixture(dataset_cfg):
    from visionllm.registry import DATASETS
    init_default_scope("visionllm")
    return DATASETS.build(dataset_cfg)


def _first_sample_tasks(dataset) -> list:
    """The task of the first sample of every dataset of a built MultiTaskDataset (through its pipeline)."""
    tasks = []
    for sub in dataset.datasets:
        assert len(sub) > 0, f"{type(sub).__name__} is empty"
        tasks.append(sub[0]["data_samples"].task)
    return tasks


def _tasks_of_each_dataset(dataset_cfg) -> list:
    """Build a MultiTaskDataset config and run its first sample of every dataset through the pipeline."""
    return _first_sample_tasks(_build_mixture(dataset_cfg))


def test_training_mixture_has_every_task(in_workspace):
    from visionllm.apis.runner import load_config
    cfg = load_config(ONERUN)
    assert len(cfg.train_dataloader.dataset.ratios) == len(TRAIN_TASKS)
    assert _tasks_of_each_dataset(cfg.train_dataloader.dataset) == TRAIN_TASKS
    datasets = cfg.train_dataloader.dataset.datasets
    assert [d.data_root for d in datasets] == ["data/shapes_varied/"] * 11
    # the shipped checkpoint's recipe: every caption asked for with the plain phrasings
    assert [d.get("read_styles") for d in datasets if d.type == "CocoCaptionDataset"] == [False]


@pytest.mark.parametrize("split", ["val", "heldout"])
def test_varied_test_configs_read_their_split(in_workspace, split):
    from visionllm.apis.runner import load_config
    cfg = load_config(os.path.join(CONFIGS, f"visionllm_tiny_shapes_onerun_varied_{split}.py"))
    folder = {"val": "val", "heldout": "val_heldout"}[split]
    for dataset in cfg.test_dataloader.dataset.datasets:
        assert dataset.data_root == "data/shapes_varied/" and dataset.data_prefix.img_path == f"images/{folder}/"
    assert cfg.test_evaluator.task_metrics.detection.ann_file.endswith(f"instances_{folder}.json")
    assert _tasks_of_each_dataset(cfg.test_dataloader.dataset) == TEST_TASKS


def test_classic_evaluation_stays_the_shipped_configs():
    from visionllm.apis.runner import load_config
    onerun, shipped = load_config(ONERUN), load_config(os.path.join(CONFIGS, "visionllm_tiny_shapes.py"))
    assert onerun.test_dataloader.to_dict() == shipped.test_dataloader.to_dict()
    assert onerun.test_evaluator.to_dict() == shipped.test_evaluator.to_dict()


def test_two_iterations_train_from_the_pretrained_body(in_workspace, tmp_path, single_thread):
    from visionllm.apis.runner import build_runner, load_config
    from visionllm.engine import unwrapped_model
    cfg = load_config(ONERUN, [f"train_cfg.max_iters={ITERS}", f"default_hooks.checkpoint.interval={ITERS}",
                               "default_hooks.logger.interval=1", "train_dataloader.dataset.length=16",
                               "custom_hooks.1.iters=2", "custom_hooks.1.batch_size=2", "custom_hooks.1.size=64",
                               "custom_hooks.1.eval_interval=2"], work_dir=str(tmp_path))
    runner = build_runner(cfg)
    body = unwrapped_model(runner.model).image_tokenizer.backbone.body
    seen = {}

    def record_first_input_body(module, args):
        """The body as the first training step sees it (after the backbone stage's before_train)."""
        if "state" not in seen:
            seen["state"] = {k: v.clone() for k, v in module.state_dict().items()}

    handle = body.register_forward_pre_hook(record_first_input_body)
    try:
        runner.train()
    finally:
        handle.remove()
    path = os.path.join(str(tmp_path), "backbone_pretraining", "resnet_body.pth")
    assert os.path.isfile(path) and os.path.isfile(os.path.join(str(tmp_path), f"iter_{ITERS}.pth"))
    saved = torch.load(path, weights_only=True)
    assert set(saved) == set(seen["state"])
    assert all(torch.equal(seen["state"][k], v) for k, v in saved.items())
    assert runner.iter == ITERS


def test_referents_experiment_is_the_shipped_model_plus_the_readout_on_vqa(in_workspace):
    from visionllm.apis.runner import load_config
    from visionllm.datasets.browsing import iter_samples
    cfg = load_config(os.path.join(CONFIGS, "visionllm_tiny_shapes_vqa_referents.py"))
    onerun = load_config(ONERUN)
    assert cfg.model.referent_readout.type == "ReferentReadout"
    assert {k: v for k, v in cfg.model.items() if k != "referent_readout"} == onerun.model.to_dict()
    assert cfg.load_from == "checkpoints/visionllm_tiny_shapes.pth"
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys.referent_readout.lr_mult == 10.0
    tasks = [sample.task for _, sample in iter_samples(cfg, "train", 8)]
    assert tasks == ["vqa"] * 8
    for dataset in cfg.test_dataloader.dataset.datasets:
        assert dataset.data_prefix.img_path == "images/val/" and dataset.data_root == "data/shapes_varied/"


def test_referents_candidate_is_the_onerun_recipe_plus_readout_and_more_open_answers_and_requests(in_workspace):
    from visionllm.apis.runner import load_config
    from visionllm.registry import DATASETS
    cfg = load_config(os.path.join(CONFIGS, "visionllm_tiny_shapes_onerun_referents.py"))
    onerun = load_config(ONERUN)
    # the run that was made: 16000 iterations, without the request adapter, the region parts and
    # their phases
    assert cfg.model.task_decoder.request_adapter is None and cfg.model.region_relations is None
    assert cfg.model.region_appearance is None
    cfg.model.task_decoder.request_adapter = onerun.model.task_decoder.request_adapter
    cfg.model.region_relations = onerun.model.region_relations
    cfg.model.region_appearance = onerun.model.region_appearance
    assert {k: v for k, v in cfg.model.items() if k != "referent_readout"} == onerun.model.to_dict()
    assert cfg.model.referent_readout.type == "ReferentReadout"
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys.referent_readout.lr_mult == 10.0
    assert cfg.train_cfg.max_iters == onerun.main_iters and cfg.custom_hooks == onerun.custom_hooks[:3]
    mixture = cfg.train_dataloader.dataset
    assert mixture.datasets[0].to_dict() == onerun.train_dataloader.dataset.to_dict()
    assert list(mixture.ratios) == [0.87, 0.08, 0.05]
    assert mixture.datasets[2].to_dict() == onerun.train_dataloader.dataset.datasets[-2].to_dict()  # plain requests
    init_default_scope("visionllm")
    open_answers = DATASETS.build(mixture.datasets[1])
    assert len(open_answers) > 0
    assert {open_answers[i]["data_samples"].answer_type for i in range(len(open_answers))} == {"other"}
    tasks = _tasks_of_each_dataset(mixture)  # the whole mixture builds; the inner one draws by its ratios
    assert len(tasks) == 3 and tasks[0] in TRAIN_TASKS and tasks[1:] == ["vqa", "request"]
    assert _tasks_of_each_dataset(cfg.test_dataloader.dataset) == TEST_TASKS


def test_late_requests_config_is_the_onerun_recipe_with_requests_raised_from_the_second_cycle():
    from visionllm.apis.runner import load_config
    from visionllm.engine import MixtureScheduleHook
    from visionllm.registry import HOOKS
    cfg = load_config(os.path.join(CONFIGS, "visionllm_tiny_shapes_onerun_late_requests.py"))
    onerun = load_config(ONERUN)
    for key in ("train_dataloader", "param_scheduler", "optim_wrapper", "test_dataloader"):
        assert cfg[key] == onerun[key], key
    # the run that was made: 16000 iterations, without the request adapter, the region parts and
    # their phases
    assert cfg.train_cfg.max_iters == onerun.main_iters == 16000
    assert cfg.model.task_decoder.request_adapter is None and onerun.model.task_decoder.request_adapter
    assert cfg.model.region_relations is None and onerun.model.region_relations
    assert cfg.model.region_appearance is None and onerun.model.region_appearance
    cfg.model.task_decoder.request_adapter = onerun.model.task_decoder.request_adapter
    cfg.model.region_relations = onerun.model.region_relations
    cfg.model.region_appearance = onerun.model.region_appearance
    assert cfg.model == onerun.model
    assert cfg.custom_hooks[:-1] == onerun.custom_hooks[:3]
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == -1
    hook = HOOKS.build(cfg.custom_hooks[-1])
    assert isinstance(hook, MixtureScheduleHook)
    assert [phase["begin"] for phase in hook.phases] == [8000] == [onerun.param_scheduler[-1].begin]
    late = np.array(hook.phases[0]["ratios"])[:-1]  # without the request phase's dataset (0 throughout)
    first = np.array(onerun.train_dataloader.dataset.ratios)[:-1]
    assert hook.phases[0]["ratios"][-1] == 0.0 == onerun.train_dataloader.dataset.ratios[-1]
    assert TRAIN_TASKS[-2] == "request" and late.sum() == pytest.approx(1.0)
    assert late[-1] == pytest.approx(0.15) and first[-1] == pytest.approx(0.03)
    # the other tasks keep their proportions among themselves
    assert late[:-1] / late[:-1].sum() == pytest.approx(first[:-1] / first[:-1].sum())


def test_benchmark_training_times_one_process_and_data_parallel_processes(in_workspace):
    """tools/benchmark_training.py's ddp mode relaunches itself under torchrun with the batch
    split between two processes and prints its row next to the config's."""
    import subprocess
    import sys
    result = subprocess.run([sys.executable, os.path.join(REPO, "tools", "benchmark_training.py"), ONERUN,
                             "--iters", "3", "--warmup", "1", "--threads", "2", "--modes", "mixed", "ddp"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-12000:]  # the workers' own errors come before torchrun's summary
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("| ")}
    assert "mixed (the config's)" in rows and "2 processes (DDP)" in rows
    seconds = float(rows["2 processes (DDP)"].split("|")[2])
    assert seconds > 0
    from tools.benchmark_training import main
    with pytest.raises(SystemExit, match="does not split among 3 processes"):
        main([ONERUN, "--modes", "ddp", "--procs", "3"])


def test_onerun_ends_with_the_request_relation_and_appearance_phases_each_training_its_part_alone():
    from visionllm.apis.runner import load_config
    from visionllm.engine import MixtureScheduleHook, ModulePhaseHook, RequestAdapterPhaseHook
    from visionllm.registry import HOOKS
    cfg = load_config(ONERUN)
    main, requests = cfg.main_iters, cfg.request_phase_iters
    relations, appearance = cfg.relation_phase_iters, cfg.appearance_phase_iters
    assert cfg.train_cfg.max_iters == main + requests + relations + appearance
    assert min(requests, relations, appearance) > 0
    assert max(s.end for s in cfg.param_scheduler) == main  # the schedule ends where the phases begin
    hooks = [HOOKS.build(h) for h in cfg.custom_hooks]
    mixture = [h for h in hooks if isinstance(h, MixtureScheduleHook)]
    adapter = [h for h in hooks if isinstance(h, RequestAdapterPhaseHook)]
    parts = {h.module: h for h in hooks if type(h) is ModulePhaseHook}
    assert len(mixture) == len(adapter) == 1 and set(parts) == {"region_relations", "region_appearance"}
    region_vqa = [0.0] * len(TRAIN_TASKS)
    region_vqa[TRAIN_TASKS.index("region_vqa")] = 1.0
    # region questions alone from the relation phase on (the appearance phase keeps them)
    assert mixture[0].phases == [dict(begin=main, ratios=[0.0] * 10 + [1.0]),
                                 dict(begin=main + requests, ratios=region_vqa)]
    assert (adapter[0].begin, adapter[0].end) == (main, main + requests)
    relation, look = parts["region_relations"], parts["region_appearance"]
    assert (relation.begin, relation.end) == (main + requests, main + requests + relations)
    assert (look.begin, look.end) == (main + requests + relations, None)
    assert cfg.model.region_relations.type == "RegionRelations"
    assert cfg.model.region_appearance.type == "RegionAppearance"
    assert cfg.train_dataloader.dataset.ratios[-1] == 0.0  # the request phase's data is not drawn before it
    assert cfg.train_dataloader.dataset.datasets[-1].composed_share == 0.5
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert {"task_decoder.request_adapter", "region_relations", "region_appearance"} <= set(keys)
    # each phase on its own (how the shipped file's parts were trained) is the same phase
    for name, phase_iters, ratios, hook in (("request_adapter", requests, mixture[0].phases[0]["ratios"], adapter[0]),
                                            ("region_relations", relations, region_vqa, relation),
                                            ("region_appearance", appearance, region_vqa, look)):
        alone = load_config(os.path.join(CONFIGS, f"visionllm_tiny_shapes_{name}.py"))
        assert alone.train_cfg.max_iters == phase_iters and alone.param_scheduler == []
        assert alone.train_dataloader.dataset.ratios == ratios
        assert alone.train_dataloader.dataset.datasets == cfg.train_dataloader.dataset.datasets
        (alone_hook,) = [HOOKS.build(h) for h in alone.custom_hooks if "Phase" in h.type]
        assert type(alone_hook) is type(hook) and alone_hook.begin == 0
        assert (alone_hook.module, alone_hook.lr, alone_hook.freeze_rest) == (hook.module, hook.lr, hook.freeze_rest)
        assert alone.model == cfg.model


@pytest.mark.parametrize("name, part", [("request_adapter", "task_decoder.request_adapter."),
                                        ("region_relations", "region_relations."),
                                        ("region_appearance", "region_appearance."),
                                        ("refinement_phase", ("task_decoder.box_refinement.",
                                                              "task_decoder.polygon_refinement."))])
def test_a_phase_on_its_own_moves_its_part_and_nothing_else(in_workspace, tmp_path, single_thread, name, part):
    """Two real iterations of the phase on its own, from the shipped weights (``part``: the prefix,
    or the prefixes, of every weight that may move)."""
    from visionllm.apis.runner import build_runner, load_config
    from visionllm.engine import unwrapped_model
    shipped = os.path.join(REPO, "checkpoints", "visionllm_tiny_shapes.pth")
    cfg = load_config(os.path.join(CONFIGS, f"visionllm_tiny_shapes_{name}.py"),
                      [f"load_from={shipped}", f"train_cfg.max_iters={ITERS}", f"default_hooks.checkpoint.interval={ITERS}",
                       "default_hooks.logger.interval=1"], work_dir=str(tmp_path))
    runner = build_runner(cfg)
    seen = {}

    def record_loaded_weights(module, args):
        if "state" not in seen:  # at the first step, after load_from
            seen["state"] = {k: v.clone() for k, v in module.state_dict().items()}

    model = unwrapped_model(runner.model)
    handle = model.register_forward_pre_hook(record_loaded_weights)
    try:
        runner.train()
    finally:
        handle.remove()
    after = model.state_dict()
    moved = {k for k, v in seen["state"].items() if not torch.equal(v, after[k])}
    assert moved and all(k.startswith(part) for k in moved), sorted(moved)[:5]


def test_the_three_phases_follow_one_another_in_one_process(in_workspace, tmp_path, single_thread):
    """One iteration of the mixture, then the one-run's phases with two iterations each, as one
    process runs them from the shipped weights: the request phase freezes all but its adapter, and
    the phases after it (which do not freeze) still train, each its own part."""
    from visionllm.apis.runner import build_runner, load_config
    from visionllm.engine import unwrapped_model
    shipped = os.path.join(REPO, "checkpoints", "visionllm_tiny_shapes.pth")
    cfg = load_config(ONERUN, [f"load_from={shipped}", "train_cfg.max_iters=7", "default_hooks.checkpoint.interval=7",
                               "default_hooks.logger.interval=1"], work_dir=str(tmp_path))
    begins = {"RequestAdapterPhaseHook": (1, 3), "region_relations": (3, 5), "region_appearance": (5, None)}
    hooks = []
    for hook in cfg.custom_hooks:
        if hook["type"] == "ShapeKindPretrainingHook":
            continue  # the body comes from the shipped weights
        if hook["type"] == "MixtureScheduleHook":
            hook = dict(hook, phases=[dict(phase, begin=begin) for phase, begin in zip(hook["phases"], (1, 3))])
        key = hook.get("module", hook["type"])
        if key in begins:
            hook = dict(hook, begin=begins[key][0], end=begins[key][1])
        hooks.append(hook)
    cfg.custom_hooks = hooks
    runner = build_runner(cfg)
    model = unwrapped_model(runner.model)
    states = []

    def record_weights(module, args):
        states.append({k: v.clone() for k, v in module.state_dict().items()})

    handle = model.register_forward_pre_hook(record_weights)
    try:
        runner.train()
    finally:
        handle.remove()
    states.append(model.state_dict())
    # weights before each training step (the first after load_from), then after the last
    assert len(states) == 8
    request_steps = {k for k, v in states[1].items() if not torch.equal(v, states[3][k])}
    assert request_steps and all(k.startswith("task_decoder.request_adapter.") for k in request_steps)
    later = {k for k, v in states[3].items() if not torch.equal(v, states[-1][k])}
    assert later and all(k.startswith(("region_relations.", "region_appearance.")) for k in later), sorted(later)[:5]
    assert any(k.startswith("region_appearance.") for k in later)


def test_classic_phase_adds_the_classic_renderer_to_the_onerun_mixture(in_workspace):
    """The classic renderer phase: the one-run mixture at 60 % in its own proportions, then the
    classic train split's detection, segmentation, grounding and VQA (40 %, the one-run's
    proportions among those four), every dataset yielding samples; the parts trained by their own
    phases stay as loaded."""
    from visionllm.apis.runner import load_config
    onerun = load_config(ONERUN)
    phase = load_config(os.path.join(CONFIGS, "visionllm_tiny_shapes_classic_phase.py"))
    datasets, ratios = phase.train_dataloader.dataset.datasets, np.array(phase.train_dataloader.dataset.ratios)
    first = len(onerun.train_dataloader.dataset.datasets)
    assert datasets[:first] == onerun.train_dataloader.dataset.datasets
    assert all(d.data_root == "data/shapes/" and "train" in d.ann_file for d in datasets[first:])
    assert _tasks_of_each_dataset(phase.train_dataloader.dataset) == TRAIN_TASKS + CLASSIC_TASKS
    assert ratios.sum() == pytest.approx(1.0) and ratios[first:].sum() == pytest.approx(0.4)
    np.testing.assert_allclose(ratios[:first], 0.6 * np.array(onerun.train_dataloader.dataset.ratios))
    onerun_shares = np.array(onerun.train_dataloader.dataset.ratios)[[TRAIN_TASKS.index(t) for t in CLASSIC_TASKS]]
    np.testing.assert_allclose(ratios[first:] / ratios[first:].sum(), onerun_shares / onerun_shares.sum())
    keys = phase.optim_wrapper.paramwise_cfg.custom_keys
    assert all(keys[part].lr_mult == 0.0 for part in ("task_decoder.request_adapter", "region_relations",
                                                         "region_appearance"))
    assert phase.model == onerun.model and phase.train_cfg.max_iters == 1200
    assert [h.type for h in phase.custom_hooks] == ["TrainableStateCheckpointHook"]  # no phase hooks, no stage


def test_onerun_classic_splits_four_tasks_between_the_renderers(in_workspace):
    """The one-run with the classic renderer in its main mixture: the one-run's datasets, then the
    classic train split's detection, segmentation, grounding and VQA (15 % of the samples), each
    task's total share the one-run's; the phases draw what the one-run's phases draw (the classic
    datasets at 0, checked on the built mixture); everything else is the one-run config."""
    from types import SimpleNamespace

    from visionllm.apis.runner import load_config
    from visionllm.engine.mixture_schedule_hook import MixtureScheduleHook
    onerun = load_config(ONERUN)
    cfg = load_config(os.path.join(CONFIGS, "visionllm_tiny_shapes_onerun_classic.py"))
    mixture = cfg.train_dataloader.dataset
    datasets, ratios = mixture.datasets, np.array(mixture.ratios)
    base_ratios = np.array(onerun.train_dataloader.dataset.ratios)
    first = len(onerun.train_dataloader.dataset.datasets)
    assert datasets[:first] == onerun.train_dataloader.dataset.datasets
    assert all(d.data_root == "data/shapes/" and "train" in d.ann_file for d in datasets[first:])
    built = _build_mixture(mixture)  # built once: its first samples here, its phases below
    assert _first_sample_tasks(built) == TRAIN_TASKS + CLASSIC_TASKS
    assert ratios.sum() == pytest.approx(1.0) and ratios[first:].sum() == pytest.approx(0.15)
    varied_index = [TRAIN_TASKS.index(t) for t in CLASSIC_TASKS]  # the same tasks' varied datasets
    totals = ratios[:first].copy()
    totals[varied_index] += ratios[first:]
    np.testing.assert_allclose(totals, base_ratios)
    assert all(0 < ratios[i] < base_ratios[i] for i in varied_index)

    def without_phases(hooks):
        return [h for h in hooks if h.type != "MixtureScheduleHook"]

    assert without_phases(cfg.custom_hooks) == without_phases(onerun.custom_hooks)
    phases = next(h for h in cfg.custom_hooks if h.type == "MixtureScheduleHook").phases
    base_phases = next(h for h in onerun.custom_hooks if h.type == "MixtureScheduleHook").phases
    assert [p.begin for p in phases] == [p.begin for p in base_phases]
    for phase, base in zip(phases, base_phases):
        assert phase.ratios == base.ratios + [0.0] * (len(datasets) - first)
    # the hook accepts every phase against the built mixture (a wrong length fails before training)
    hook = MixtureScheduleHook(phases=[p.to_dict() for p in phases])
    loader = SimpleNamespace(num_workers=0, batch_sampler=None, dataset=built)
    runner = SimpleNamespace(train_loop=SimpleNamespace(dataloader=loader), iter=0,
                             logger=SimpleNamespace(info=lambda message: None))
    hook.before_train(runner)
    assert built.probabilities.tolist() == pytest.approx(list(ratios))
    drawn = []
    for phase in phases:  # the iteration before each phase: the next batch is drawn with its ratios
        runner.iter = phase.begin - 1
        hook.after_train_iter(runner, batch_idx=runner.iter)
        drawn.append(np.flatnonzero(built.probabilities).tolist())
    assert drawn == [[first - 1], [TRAIN_TASKS.index("region_vqa")]]  # the phase requests; region questions
    for key in ("model", "train_cfg", "param_scheduler", "optim_wrapper", "default_hooks", "randomness"):
        assert cfg.get(key) == onerun.get(key), key
