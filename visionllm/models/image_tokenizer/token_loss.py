"""L_tok: the auxiliary loss that teaches image tokens to sit on objects and know what they are."""
from typing import Dict, List, Optional

import torch
from torch import nn

from visionllm.models.matching import hungarian_match


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Element-wise focal loss (Lin et al.): easy negatives are down-weighted by ``p ** gamma``."""
    prob = logits.sigmoid()
    ce = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


class TokenLoss(nn.Module):
    """Objectness focal loss + L1 of matched reference points to gt centres (+ name alignment).

    Each image's tokens are matched one-to-one to its ground-truth objects (Hungarian, cost =
    focal objectness cost + L1 distance of the reference point to the object centre); matched
    tokens are objects, all others background. Images marked unsupervised (``supervised``
    False: a caption or question without box annotation) add nothing: "no boxes known" is not
    "no objects". When token-to-name logits are given
    (``[M, n]`` per image against the instruction's category names), a focal loss makes a
    matched token score its object's name and nothing else score anything (GLIP-style region-word
    alignment): the only loss that reaches the visual features without passing through the LLM.

    Args:
        obj_weight, ref_weight, cls_weight: loss weights.
        match_obj_weight, match_ref_weight: cost weights of the matching.
        alpha, gamma: focal loss parameters.
    """

    def __init__(self, obj_weight: float = 2.0, ref_weight: float = 5.0, cls_weight: float = 2.0,
                 match_obj_weight: float = 2.0, match_ref_weight: float = 5.0, alpha: float = 0.25,
                 gamma: float = 2.0):
        super().__init__()
        self.obj_weight = obj_weight
        self.cls_weight = cls_weight
        self.ref_weight = ref_weight
        self.match_obj_weight = match_obj_weight
        self.match_ref_weight = match_ref_weight
        self.alpha = alpha
        self.gamma = gamma

    @torch.no_grad()
    def match(self, logits: torch.Tensor, points: torch.Tensor, centres: torch.Tensor):
        prob = logits.sigmoid()[:, None]
        pos = self.alpha * (1 - prob) ** self.gamma * -(prob + 1e-8).log()
        neg = (1 - self.alpha) * prob ** self.gamma * -(1 - prob + 1e-8).log()
        cost = self.match_obj_weight * (pos - neg) + self.match_ref_weight * torch.cdist(points, centres, p=1)
        return hungarian_match(cost)

    def forward(self, objectness_logits: torch.Tensor, reference_points: torch.Tensor,
                centres: List[torch.Tensor], class_logits: Optional[List[Optional[torch.Tensor]]] = None,
                labels: Optional[List[torch.Tensor]] = None,
                supervised: Optional[List[bool]] = None) -> Dict[str, torch.Tensor]:
        """objectness_logits ``[B, M]``, reference_points ``[B, M, 2]``, centres: per image
        ``[n, 2]`` in [0, 1]; optional class_logits: per image ``[M, k]`` token-to-name logits
        (None for an image without names) with labels ``[n]`` indexing those names; optional
        supervised: per image whether its boxes are annotated (default: all)."""
        targets = torch.zeros_like(objectness_logits)
        rows = torch.as_tensor([True] * len(centres) if supervised is None else list(supervised),
                               dtype=torch.bool, device=objectness_logits.device)
        matched_points, matched_centres = [], []
        loss_cls = objectness_logits.new_zeros(())
        for b, gt in enumerate(centres):
            if not rows[b]:
                continue
            tokens, gts = self.match(objectness_logits[b], reference_points[b], gt)
            targets[b, tokens] = 1.0
            matched_points.append(reference_points[b, tokens])
            matched_centres.append(gt[gts])
            if class_logits is not None and class_logits[b] is not None:
                cls_targets = torch.zeros_like(class_logits[b])
                cls_targets[tokens, labels[b][gts]] = 1.0
                loss_cls = loss_cls + sigmoid_focal_loss(class_logits[b], cls_targets, self.alpha, self.gamma).sum()
        num_gts = max(sum(len(c) for c in centres), 1)
        loss_obj = sigmoid_focal_loss(objectness_logits[rows], targets[rows], self.alpha, self.gamma).sum() / num_gts
        l1 = reference_points.new_zeros(())
        if matched_points:
            l1 = (torch.cat(matched_points) - torch.cat(matched_centres)).abs().sum() / num_gts
        # keep the graph connected to the points even for images without objects
        l1 = l1 + 0.0 * reference_points.sum()
        losses = dict(loss_tok_obj=self.obj_weight * loss_obj, loss_tok_ref=self.ref_weight * l1)
        if class_logits is not None:
            losses["loss_tok_cls"] = self.cls_weight * loss_cls / num_gts
        return losses
