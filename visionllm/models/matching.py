"""One-to-one matching of decoder slots to ground-truth instances (Hungarian algorithm).

Every slot group predicts one instance (or no object). Training needs a one-to-one assignment
between the N slots and the G ground-truth instances of an image that minimises the total cost;
``scipy.optimize.linear_sum_assignment`` solves it exactly, also for rectangular matrices
(G < N: some slots stay unmatched and learn "no object"; G > N: only N instances get a slot).
"""
from typing import Optional, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from visionllm.registry import TASK_UTILS

# linear_sum_assignment rejects inf / nan; a large finite cost keeps such pairs last in line.
_INVALID_COST = 1e8


def hungarian_match(cost: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of rows (slots) to columns (ground truths).

    Args:
        cost: ``[num_slots, num_gts]`` cost of assigning slot i to ground truth j.

    Returns:
        ``(slot_indices, gt_indices)``: LongTensors of length ``min(num_slots, num_gts)`` on the
        cost's device, sorted by slot index; pair k assigns slot ``slot_indices[k]`` to
        ground truth ``gt_indices[k]``.
    """
    if cost.dim() != 2:
        raise ValueError(f"cost must be [num_slots, num_gts], got shape {tuple(cost.shape)}")
    device = cost.device
    if cost.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty.clone()
    values = cost.detach().to(device="cpu", dtype=torch.float64).numpy()
    values = np.where(np.isfinite(values), values, _INVALID_COST)
    rows, cols = linear_sum_assignment(values)  # rows come back sorted
    return (torch.as_tensor(rows, dtype=torch.long, device=device),
            torch.as_tensor(cols, dtype=torch.long, device=device))


@TASK_UTILS.register_module()
class HungarianMatcher:
    """Match slots to ground truths by class probability and coordinate agreement.

    cost[i, j] = - class_weight * p_i(label_j) + coord_weight * coord_cost(i, j)

    The coordinate cost is either ``'nll'``, the mean negative log-likelihood of ground truth
    j's location tokens under slot i's location distributions (the quantity the decoder is
    trained on), or ``'l1'``, the mean absolute difference between slot i's expected
    coordinates and ground truth j's coordinates (callers normalise them, e.g. by image size).

    Args:
        class_weight: weight of the class term (the probability, as in DETR, not its log, so
            an unsure class cannot dominate the geometry).
        coord_weight: weight of the coordinate term.
        coord_cost: ``'nll'`` or ``'l1'``.
    """

    def __init__(self, class_weight: float = 1.0, coord_weight: float = 1.0, coord_cost: str = "nll"):
        if coord_cost not in ("nll", "l1"):
            raise ValueError(f"coord_cost must be 'nll' or 'l1', got {coord_cost!r}")
        self.class_weight = float(class_weight)
        self.coord_weight = float(coord_weight)
        self.coord_cost = coord_cost

    @torch.no_grad()
    def compute_cost(self, cls_probs: torch.Tensor, gt_labels: torch.Tensor,
                     coord_log_probs: Optional[torch.Tensor] = None, gt_bins: Optional[torch.Tensor] = None,
                     pred_coords: Optional[torch.Tensor] = None,
                     gt_coords: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Build the ``[num_slots, num_gts]`` cost matrix.

        Args:
            cls_probs: ``[S, C]`` class probabilities per slot (columns indexed by label; a
                trailing no-object column may be present and is simply never a label).
            gt_labels: ``[G]`` class index of each ground truth.
            coord_log_probs: ``[S, F, B]`` log-probabilities over B location bins for the F
                coordinate fields (``'nll'`` cost).
            gt_bins: ``[G, F]`` ground-truth location bins (``'nll'`` cost).
            pred_coords: ``[S, F]`` expected coordinates (``'l1'`` cost).
            gt_coords: ``[G, F]`` ground-truth coordinates (``'l1'`` cost).
        """
        num_slots, num_gts = cls_probs.shape[0], gt_labels.shape[0]
        if num_gts == 0:
            return cls_probs.new_zeros(num_slots, 0)
        cost = -self.class_weight * cls_probs[:, gt_labels.long()]
        if self.coord_cost == "nll":
            if coord_log_probs is None or gt_bins is None:
                raise ValueError("the 'nll' coordinate cost needs coord_log_probs and gt_bins")
            num_fields = coord_log_probs.shape[1]
            # index[s, f, g] = gt_bins[g, f]: the log-prob slot s gives to gt g's bin on field f.
            index = gt_bins.long().t().unsqueeze(0).expand(num_slots, num_fields, num_gts)
            nll = -coord_log_probs.gather(2, index).mean(dim=1)
            cost = cost + self.coord_weight * nll
        else:
            if pred_coords is None or gt_coords is None:
                raise ValueError("the 'l1' coordinate cost needs pred_coords and gt_coords")
            l1 = (pred_coords.unsqueeze(1) - gt_coords.unsqueeze(0).to(pred_coords)).abs().mean(dim=-1)
            cost = cost + self.coord_weight * l1
        return cost

    def __call__(self, cls_probs: torch.Tensor, gt_labels: torch.Tensor,
                 **coord_inputs) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return ``(slot_indices, gt_indices)`` of the minimum-cost assignment (see
        :func:`hungarian_match`); keyword arguments as in :meth:`compute_cost`."""
        return hungarian_match(self.compute_cost(cls_probs, gt_labels, **coord_inputs))
