"""Fresh random inputs every run, repeatable on demand: VISIONLLM_TEST_SEED repeats the run a
failure message names."""
import os

import torch


def fresh_seed() -> int:
    """``VISIONLLM_TEST_SEED`` when set, otherwise a new seed."""
    return int(os.environ.get("VISIONLLM_TEST_SEED", torch.seed() % 2**31))


def seed_and_generator():
    """``(seed, torch.Generator seeded with it)`` from ``fresh_seed()``."""
    seed = fresh_seed()
    return seed, torch.Generator().manual_seed(seed)
