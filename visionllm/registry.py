"""Registries of the ``visionllm`` scope.

Each registry is a child of mmengine's root registry of the same kind, so mmengine's Runner
finds our models, datasets, transforms and metrics when ``default_scope='visionllm'``. Every
root registry has a child here, also those we add nothing to (loops, optimizers, schedulers,
...): mmengine builds from them in the default scope too, and a scope without a child makes it
fall back to the root with a warning at each build.
"""
from mmengine import registry as mmengine_registry
from mmengine.registry import Registry

# The registries our modules register into (``locations``: where their entries are defined).
MODELS = Registry("model", parent=mmengine_registry.MODELS, locations=["visionllm.models"])
DATASETS = Registry("dataset", parent=mmengine_registry.DATASETS, locations=["visionllm.datasets"])
TRANSFORMS = Registry("transform", parent=mmengine_registry.TRANSFORMS, locations=["visionllm.datasets"])
DATA_SAMPLERS = Registry("data sampler", parent=mmengine_registry.DATA_SAMPLERS, locations=["visionllm.datasets"])
METRICS = Registry("metric", parent=mmengine_registry.METRICS, locations=["visionllm.evaluation"])
TASK_UTILS = Registry("task util", parent=mmengine_registry.TASK_UTILS, locations=["visionllm.models"])
HOOKS = Registry("hook", parent=mmengine_registry.HOOKS, locations=["visionllm.engine"])
OPTIM_WRAPPER_CONSTRUCTORS = Registry("optimizer wrapper constructor",
                                      parent=mmengine_registry.OPTIM_WRAPPER_CONSTRUCTORS,
                                      locations=["visionllm.engine"])
VISUALIZERS = Registry("visualizer", parent=mmengine_registry.VISUALIZERS, locations=["visionllm.visualization"])
# The tasks the model follows (``visionllm.tasks``: one ``TaskSpec`` per task); mmengine has none.
TASKS = Registry("task", locations=["visionllm.tasks"])

# mmengine's own components, looked up through the visionllm scope.
RUNNERS = Registry("runner", parent=mmengine_registry.RUNNERS)
RUNNER_CONSTRUCTORS = Registry("runner constructor", parent=mmengine_registry.RUNNER_CONSTRUCTORS)
LOOPS = Registry("loop", parent=mmengine_registry.LOOPS)
STRATEGIES = Registry("strategy", parent=mmengine_registry.STRATEGIES)
MODEL_WRAPPERS = Registry("model_wrapper", parent=mmengine_registry.MODEL_WRAPPERS)
WEIGHT_INITIALIZERS = Registry("weight initializer", parent=mmengine_registry.WEIGHT_INITIALIZERS)
OPTIMIZERS = Registry("optimizer", parent=mmengine_registry.OPTIMIZERS)
OPTIM_WRAPPERS = Registry("optim_wrapper", parent=mmengine_registry.OPTIM_WRAPPERS)
PARAM_SCHEDULERS = Registry("parameter scheduler", parent=mmengine_registry.PARAM_SCHEDULERS)
EVALUATOR = Registry("evaluator", parent=mmengine_registry.EVALUATOR)
VISBACKENDS = Registry("vis_backend", parent=mmengine_registry.VISBACKENDS)
LOG_PROCESSORS = Registry("log_processor", parent=mmengine_registry.LOG_PROCESSORS)
INFERENCERS = Registry("inferencer", parent=mmengine_registry.INFERENCERS)
FUNCTIONS = Registry("function", parent=mmengine_registry.FUNCTIONS)
