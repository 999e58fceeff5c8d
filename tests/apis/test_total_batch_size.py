"""``total_batch_size`` in a config: the samples of an optimizer step over all processes, split
among the processes a launcher starts, so that one or several processes train on the same
samples at every step."""
import textwrap

import pytest
from mmengine.dataset import InfiniteSampler

from visionllm.apis.runner import load_config, per_process_batch_size, world_size


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "total_batch.py"
    path.write_text(textwrap.dedent("""
        total_batch_size = 4
        train_dataloader = dict(batch_size=1, dataset=dict(type="Dummy"))
    """))
    return str(path)


def test_each_process_loads_its_share(config_file, monkeypatch):
    assert load_config(config_file).train_dataloader.batch_size == 4
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert load_config(config_file, launcher="pytorch").train_dataloader.batch_size == 2
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert load_config(config_file, launcher="slurm").train_dataloader.batch_size == 1


def test_a_total_that_does_not_split_and_a_conflicting_override_are_refused(config_file, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(SystemExit, match="does not split among 3 processes"):
        load_config(config_file, launcher="pytorch")
    with pytest.raises(SystemExit, match="override that instead"):
        load_config(config_file, ["train_dataloader.batch_size=8"])
    assert load_config(config_file, ["total_batch_size=8"]).train_dataloader.batch_size == 8
    for bad in (0, -4, 2.0, True):
        with pytest.raises(SystemExit, match="positive integer"):
            per_process_batch_size(bad, 1)


def test_world_size_comes_from_the_launchers_environment(monkeypatch):
    assert world_size("none") == 1
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit, match="WORLD_SIZE is not set"):
        world_size("pytorch")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "8")
    assert world_size("mpi") == 8
    with pytest.raises(SystemExit, match="unknown launcher"):
        world_size("ray")


def _step_batches(monkeypatch, processes, total, steps):
    """The indices each step's batches hold, over all ranks, from mmengine's InfiniteSampler."""
    per_rank = []
    for rank in range(processes):
        monkeypatch.setattr("mmengine.dataset.sampler.get_dist_info", lambda rank=rank: (rank, processes))
        indices = iter(InfiniteSampler(list(range(1000)), shuffle=True, seed=7))
        share = per_process_batch_size(total, processes)
        per_rank.append([[next(indices) for _ in range(share)] for _ in range(steps)])
    return [sorted(i for rank in per_rank for i in rank[step]) for step in range(steps)]


@pytest.mark.parametrize("processes", [2, 4])
def test_the_shares_of_a_step_are_the_samples_one_process_would_batch(monkeypatch, processes):
    single = _step_batches(monkeypatch, 1, 4, steps=50)
    assert _step_batches(monkeypatch, processes, 4, steps=50) == single
    assert len({i for batch in single for i in batch}) == 200  # distinct samples: a real permutation
