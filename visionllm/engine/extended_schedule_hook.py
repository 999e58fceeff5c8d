"""Resuming a finished run into a config whose schedule goes on after the checkpoint's."""
from mmengine.hooks import Hook

from visionllm.registry import HOOKS


@HOOKS.register_module()
class ExtendedScheduleHook(Hook):
    """Let a run resume from a checkpoint written under a shorter schedule.

    mmengine restores parameter schedulers by position and leaves every scheduler the
    checkpoint has no state for at step 0, so a scheduler appended to the config (say a second
    cosine cycle from iteration 8000 on) would wait ``runner.iter`` more iterations before it
    began. Before training, every scheduler whose step count lags the resumed iteration is
    advanced to it, so the resumed run follows the config's schedule exactly as a run from
    iteration 0 would. A lagging scheduler whose window has already begun at that iteration
    cannot be rebuilt from the checkpoint and is an error.
    """

    priority = "VERY_HIGH"  # before any hook reads the learning rate

    def before_train(self, runner) -> None:
        schedulers = runner.param_schedulers
        if not runner.iter or not schedulers:
            return
        if isinstance(schedulers, dict):
            schedulers = [s for group in schedulers.values() for s in group]
        for scheduler in schedulers:
            if scheduler._global_step >= runner.iter:
                continue
            if scheduler.begin < runner.iter:
                raise ValueError(
                    f"{type(scheduler).__name__} (iterations {scheduler.begin}-{scheduler.end}) has no state in "
                    f"the checkpoint of iteration {runner.iter} but its window began before it: only schedulers "
                    "that start at or after the resumed iteration can be added to a resumed run")
            # The step a run from nothing takes after iteration runner.iter - 1 (it sets the first
            # value of a window that begins at runner.iter; before the window, it only counts).
            scheduler._global_step = runner.iter - 1
            scheduler.step()
            runner.logger.info(f"{type(scheduler).__name__} (iterations {scheduler.begin}-{scheduler.end}) "
                               f"is new in this config: advanced to the resumed iteration {runner.iter}")
