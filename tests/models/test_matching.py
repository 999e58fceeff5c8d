"""Hungarian matching equals brute force; rectangular both ways; empty; cost construction."""
import itertools
import random

import pytest
import torch

from visionllm.models.matching import HungarianMatcher, hungarian_match
from visionllm.registry import TASK_UTILS


def _brute_force_min(cost: torch.Tensor) -> float:
    num_slots, num_gts = cost.shape
    best = float("inf")
    if num_slots >= num_gts:  # every gt gets a distinct slot
        for slots in itertools.permutations(range(num_slots), num_gts):
            best = min(best, sum(cost[s, g].item() for g, s in enumerate(slots)))
    else:  # every slot gets a distinct gt
        for gts in itertools.permutations(range(num_gts), num_slots):
            best = min(best, sum(cost[s, g].item() for s, g in enumerate(gts)))
    return best


def _check_assignment(cost, slots, gts):
    n = min(cost.shape)
    assert slots.dtype == torch.long and gts.dtype == torch.long
    assert len(slots) == len(gts) == n
    assert len(set(slots.tolist())) == n and len(set(gts.tolist())) == n
    assert slots.tolist() == sorted(slots.tolist())
    return cost[slots, gts].sum().item()


@pytest.mark.parametrize("trial", range(40))
def test_equals_brute_force(trial):
    rng = random.Random(trial)
    num_slots, num_gts = rng.randint(1, 6), rng.randint(1, 6)
    cost = torch.randn(num_slots, num_gts) * rng.choice([0.1, 1.0, 100.0])
    slots, gts = hungarian_match(cost)
    total = _check_assignment(cost, slots, gts)
    assert total == pytest.approx(_brute_force_min(cost), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("shape", [(7, 3), (3, 7)])
def test_rectangular_both_ways(shape):
    cost = torch.rand(*shape)
    slots, gts = hungarian_match(cost)
    _check_assignment(cost, slots, gts)
    assert len(slots) == 3
    assert _check_assignment(cost, slots, gts) == pytest.approx(_brute_force_min(cost), rel=1e-6)


@pytest.mark.parametrize("shape", [(5, 0), (0, 4), (0, 0)])
def test_empty(shape):
    slots, gts = hungarian_match(torch.rand(*shape))
    assert slots.numel() == 0 and gts.numel() == 0 and slots.dtype == torch.long


def test_non_finite_costs_are_avoided():
    cost = torch.rand(3, 2)
    cost[0, 0] = float("inf")
    cost[1, 1] = float("nan")
    slots, gts = hungarian_match(cost)
    pairs = set(zip(slots.tolist(), gts.tolist()))
    assert (0, 0) not in pairs and (1, 1) not in pairs


def test_matcher_recovers_planted_assignment_nll():
    """Slots that are confident about a gt's class and bins must be matched to it."""
    torch.manual_seed(0)
    num_slots, num_gts, num_classes, num_fields, num_bins = 8, 4, 5, 4, 33
    gt_labels = torch.randint(0, num_classes, (num_gts,))
    gt_bins = torch.randint(0, num_bins, (num_gts, num_fields))
    owner = torch.randperm(num_slots)[:num_gts]  # slot owner[j] "predicts" gt j
    cls_logits = torch.randn(num_slots, num_classes + 1)
    loc_logits = torch.randn(num_slots, num_fields, num_bins)
    for j, s in enumerate(owner.tolist()):
        cls_logits[s, gt_labels[j]] += 8
        loc_logits[s, torch.arange(num_fields), gt_bins[j]] += 8
    matcher = TASK_UTILS.build(dict(type="HungarianMatcher", class_weight=1.0, coord_weight=1.0))
    assert isinstance(matcher, HungarianMatcher)
    slots, gts = matcher(cls_logits.softmax(-1), gt_labels,
                         coord_log_probs=loc_logits.log_softmax(-1), gt_bins=gt_bins)
    assert dict(zip(gts.tolist(), slots.tolist())) == {j: s for j, s in enumerate(owner.tolist())}


def test_matcher_cost_terms():
    torch.manual_seed(1)
    probs = torch.rand(6, 4).softmax(-1)
    labels = torch.tensor([2, 0, 3])
    pred = torch.rand(6, 4)
    gt = torch.rand(3, 4)
    matcher = HungarianMatcher(class_weight=2.0, coord_weight=3.0, coord_cost="l1")
    cost = matcher.compute_cost(probs, labels, pred_coords=pred, gt_coords=gt)
    i, j = 4, 1
    expected = -2.0 * probs[i, labels[j]] + 3.0 * (pred[i] - gt[j]).abs().mean()
    assert cost.shape == (6, 3) and cost[i, j].item() == pytest.approx(expected.item(), rel=1e-6)
    # nll term: mean over fields of -log p(gt bin)
    log_probs = torch.randn(6, 4, 9).log_softmax(-1)
    bins = torch.randint(0, 9, (3, 4))
    cost = HungarianMatcher(class_weight=0.0).compute_cost(probs, labels, coord_log_probs=log_probs, gt_bins=bins)
    expected = -log_probs[i, torch.arange(4), bins[j]].mean()
    assert cost[i, j].item() == pytest.approx(expected.item(), rel=1e-6)
    # zero ground truth
    slots, gts = matcher(probs, torch.zeros(0, dtype=torch.long), pred_coords=pred, gt_coords=torch.zeros(0, 4))
    assert slots.numel() == 0 and gts.numel() == 0
