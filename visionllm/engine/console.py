"""What a training or test run prints to the console.

mmengine's Runner logs, before the first iteration, the whole system environment (about 30
lines), the whole config (hundreds of lines) and the hook order (about 30 lines). They belong in
the run's log file, where they stay; on the console they bury what a user watches: progress,
losses and the metric tables. ``concise_console(RunnerClass)`` returns a runner class whose
console leaves those three blocks out and says once where they are, unless the log level is
DEBUG.
"""
import logging
from typing import Type

from mmengine.logging import MMLogger

# How the three set-up blocks of mmengine's Runner begin (Runner._log_env, Runner.__init__), and
# its SyncBN notice for single-process runs (Runner.wrap_model), which no model here needs.
SETUP_BLOCKS = ("System environment:", "Config:\n", "Hooks will be executed in the following order:",
                "Distributed training is not used, all SyncBatchNorm")


class SetupBlocksFilter(logging.Filter):
    """A console-handler filter that drops mmengine's set-up blocks (other handlers keep them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage().lstrip("\n-")
        return not message.startswith(SETUP_BLOCKS)


def _console_handlers(logger: MMLogger):
    return [h for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def keep_setup_blocks_off_the_console(logger: MMLogger) -> None:
    """Install :class:`SetupBlocksFilter` on the logger's console handlers (not below INFO)."""
    for handler in _console_handlers(logger):
        if handler.level > logging.DEBUG and not any(isinstance(f, SetupBlocksFilter) for f in handler.filters):
            handler.addFilter(SetupBlocksFilter())
            if getattr(logger, "log_file", None):
                logger.info(f"environment, config and hook order: in {logger.log_file}")


def concise_console(runner_cls: Type) -> Type:
    """A subclass of the mmengine runner class ``runner_cls`` whose logger keeps the set-up blocks
    off the console."""

    class ConciseConsoleRunner(runner_cls):
        def build_logger(self, *args, **kwargs) -> MMLogger:
            logger = super().build_logger(*args, **kwargs)
            keep_setup_blocks_off_the_console(logger)
            return logger

        def build_strategy(self, *args, **kwargs):
            # FlexibleRunner: the strategy builds the logger (Runner has no strategies).
            strategy = super().build_strategy(*args, **kwargs)
            if isinstance(getattr(strategy, "logger", None), MMLogger):
                keep_setup_blocks_off_the_console(strategy.logger)
            return strategy

    return ConciseConsoleRunner
