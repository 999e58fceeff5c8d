"""Run a tool's ``main(argv)`` in this process where it must refuse to start."""
import pytest


def tool_refusal(tool_main, args, cwd, monkeypatch) -> str:
    """The message ``tool_main(args)``, run from ``cwd``, stops with: a SystemExit with text,
    which Python prints as is, without a traceback."""
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("LOCAL_RANK", "0")  # tools/train.py sets it when absent
    with pytest.raises(SystemExit) as stop:
        tool_main(args)
    assert isinstance(stop.value.code, str), stop.value.code
    return stop.value.code
