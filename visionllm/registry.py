"""Registries of the ``visionllm`` scope.

Each registry is a child of mmengine's root registry of the same kind, so mmengine's Runner
finds our models, datasets, transforms and metrics when ``default_scope='visionllm'``.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import TASK_UTILS as MMENGINE_TASK_UTILS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import Registry

MODELS = Registry("model", parent=MMENGINE_MODELS, locations=["visionllm.models"])
DATASETS = Registry("dataset", parent=MMENGINE_DATASETS, locations=["visionllm.datasets"])
TRANSFORMS = Registry("transform", parent=MMENGINE_TRANSFORMS, locations=["visionllm.datasets"])
DATA_SAMPLERS = Registry("data sampler", parent=MMENGINE_DATA_SAMPLERS, locations=["visionllm.datasets"])
METRICS = Registry("metric", parent=MMENGINE_METRICS, locations=["visionllm.evaluation"])
TASK_UTILS = Registry("task util", parent=MMENGINE_TASK_UTILS, locations=["visionllm.models"])
HOOKS = Registry("hook", parent=MMENGINE_HOOKS, locations=["visionllm.engine"])
OPTIM_WRAPPER_CONSTRUCTORS = Registry("optimizer wrapper constructor", parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                      locations=["visionllm.engine"])
VISUALIZERS = Registry("visualizer", parent=MMENGINE_VISUALIZERS, locations=["visionllm.visualization"])
