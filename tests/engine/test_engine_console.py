"""concise_console: mmengine's set-up blocks go to the log file, not to the console."""
import io
import logging
import uuid

from mmengine.logging import MMLogger

from visionllm.engine.console import concise_console

ENV = "\n" + "-" * 60 + "\nSystem environment:\n    sys.platform: linux\n"
CONFIG = "Config:\nmodel = dict(type='VisionLLM')"
HOOKS = "Hooks will be executed in the following order:\nbefore_run:\n(VERY_HIGH   ) RuntimeInfoHook"
SYNCBN = ("Distributed training is not used, all SyncBatchNorm (SyncBN) layers in the model will be "
          "automatically reverted to BatchNormXd layers if they are used.")
PROGRESS = "Iter(train) [ 5/30]  lr: 4.0000e-04  loss: 80.1"


class FakeRunner:
    """The part of mmengine's Runner this feature touches: build_logger, then the set-up logs."""

    def __init__(self, log_file, log_level):
        self.log_file, self.log_level = log_file, log_level
        self.console = io.StringIO()

    def build_logger(self, log_level="INFO", log_file=None, **kwargs):
        logger = MMLogger.get_instance(f"console-test-{uuid.uuid4().hex}", log_level=log_level, log_file=log_file)
        for handler in logger.handlers:  # the console handler writes to our buffer
            if type(handler) is logging.StreamHandler:
                handler.setStream(self.console)
        return logger

    def run(self):
        logger = self.build_logger(log_level=self.log_level, log_file=self.log_file)
        for message in (ENV, CONFIG, HOOKS, SYNCBN, PROGRESS):
            logger.info(message)
        logger.warning("a real warning")
        for handler in logger.handlers:
            handler.flush()
        return self.console.getvalue(), open(self.log_file).read()


def test_setup_blocks_stay_in_the_log_file_only(tmp_path):
    log_file = str(tmp_path / "run.log")
    console, file_text = concise_console(FakeRunner)(log_file, "INFO").run()
    for block in ("System environment:", "Config:", "Hooks will be executed", "SyncBatchNorm"):
        assert block not in console
        assert block in file_text
    assert PROGRESS in console and "a real warning" in console
    assert log_file in console  # says where the blocks went


def test_debug_level_keeps_everything_on_the_console(tmp_path):
    console, _ = concise_console(FakeRunner)(str(tmp_path / "run.log"), "DEBUG").run()
    for block in ("System environment:", "Config:", "Hooks will be executed", PROGRESS):
        assert block in console


def test_plain_runner_shows_the_blocks(tmp_path):
    """The fake reproduces mmengine's behaviour without the feature (so the test above can fail)."""
    console, _ = FakeRunner(str(tmp_path / "run.log"), "INFO").run()
    assert "System environment:" in console and "Config:" in console


class FakeStrategy:
    def __init__(self, runner):
        self.logger = FakeRunner.build_logger(runner, log_level=runner.log_level, log_file=runner.log_file)


class FakeFlexibleRunner(FakeRunner):
    """mmengine's FlexibleRunner: its strategy builds the logger."""

    def build_strategy(self):
        return FakeStrategy(self)

    def run(self):
        logger = self.build_strategy().logger
        for message in (ENV, CONFIG, PROGRESS):
            logger.info(message)
        for handler in logger.handlers:
            handler.flush()
        return self.console.getvalue(), open(self.log_file).read()


def test_flexible_runner_logger_built_by_its_strategy(tmp_path):
    console, file_text = concise_console(FakeFlexibleRunner)(str(tmp_path / "run.log"), "INFO").run()
    assert "System environment:" not in console and "Config:" not in console and PROGRESS in console
    assert "System environment:" in file_text and "Config:" in file_text
