"""Location tokens: absolute pixel coordinates <-> offset bins relative to a reference point.

Each slot is bound to an image token whose reference point ``(cx, cy)`` in [0, 1] says roughly
where its object is; coordinates are written as offsets from it. Location token ``<p k>``,
``k in [-half, half]`` with ``half = num_bins // 2``, on an x field means an offset of
``k / half`` image widths (y: heights). The offsets therefore reach one full image size in either
direction, enough for any point of the image from any reference point, with a resolution (bin
width) of ``W / half`` pixels. Bin *indices* are ``k + half`` in ``0 .. num_bins - 1``.
"""
from typing import Sequence, Union

import torch

ImageSize = Union[Sequence[float], torch.Tensor]


class LocationCodec:
    """Encode / decode points, boxes and polygons to location-bin indices.

    Args:
        num_bins: number of location tokens; odd, so that offset 0 has its own bin
            (1025 gives ``<p-512> .. <p512>``).
    """

    def __init__(self, num_bins: int = 1025):
        if num_bins < 3 or num_bins % 2 == 0:
            raise ValueError(f"num_bins must be odd and >= 3 (a zero-offset bin), got {num_bins}")
        self.num_bins = num_bins
        self.half = num_bins // 2

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_bins={self.num_bins})"

    def offset_of_bin(self, bins: torch.Tensor) -> torch.Tensor:
        """Bin index → signed offset k (the number in the token name ``<p k>``)."""
        return bins - self.half

    def bin_width(self, img_wh: ImageSize) -> torch.Tensor:
        """Pixels per bin along x and y: ``[2]``. Round trips are exact to half of this."""
        return self._size(img_wh, torch.float64) / self.half

    @staticmethod
    def _size(img_wh: ImageSize, dtype: torch.dtype, device=None) -> torch.Tensor:
        # (w, h) as a tuple, or a tensor [..., 2] broadcastable against the points.
        return torch.as_tensor(img_wh, dtype=dtype, device=device)

    # -- points ---------------------------------------------------------------------------
    def encode(self, points_xy: torch.Tensor, ref_xy: torch.Tensor, img_wh: ImageSize) -> torch.Tensor:
        """Points ``[..., 2]`` (x, y) in absolute pixels, reference points ``[..., 2]`` in
        [0, 1] (broadcastable), image size ``(w, h)`` → LongTensor of bin indices ``[..., 2]``.
        Offsets beyond one image size are clipped to the outermost bins."""
        # float64: W * ref and the division must not lose the half-bin guarantee at 1025 bins.
        points = points_xy.to(torch.float64)
        size = self._size(img_wh, torch.float64, points.device)
        ref = ref_xy.to(device=points.device, dtype=torch.float64)
        offsets = torch.round((points - ref * size) / size * self.half)
        offsets = offsets.clamp(-self.half, self.half)
        return offsets.long() + self.half

    def decode(self, bins: torch.Tensor, ref_xy: torch.Tensor, img_wh: ImageSize,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Bin indices ``[..., 2]`` (may be fractional, e.g. expectations) → absolute pixels."""
        size = self._size(img_wh, torch.float64, bins.device)
        ref = ref_xy.to(device=bins.device, dtype=torch.float64)
        offsets = self.offset_of_bin(bins.to(torch.float64))
        return (ref * size + offsets / self.half * size).to(dtype)

    def decode_expectation(self, probs: torch.Tensor, ref_xy: torch.Tensor, img_wh: ImageSize) -> torch.Tensor:
        """Expected coordinate under a distribution over bins.

        ``probs [..., 2, num_bins]`` (x then y of each point; renormalised here, so
        probabilities restricted to the location tokens may be passed as they are) →
        pixels ``[..., 2]`` in the dtype of ``probs``. Sub-bin precision, and differentiable.
        """
        if probs.shape[-1] != self.num_bins:
            raise ValueError(f"expected {self.num_bins} bins in the last dim, got {probs.shape[-1]}")
        weights = probs / probs.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)
        index = torch.arange(self.num_bins, device=probs.device, dtype=probs.dtype)
        expected_bins = (weights * index).sum(dim=-1)
        size = self._size(img_wh, probs.dtype, probs.device)
        ref = ref_xy.to(device=probs.device, dtype=probs.dtype)
        return ref * size + (expected_bins - self.half) / self.half * size

    @staticmethod
    def _per_item(img_wh: ImageSize) -> ImageSize:
        # Per-item sizes [n, 2] line up with refs [n, 2]: both gain the points axis.
        if isinstance(img_wh, torch.Tensor) and img_wh.dim() >= 2:
            return img_wh.unsqueeze(-2)
        return img_wh

    # -- boxes [n, 4] xyxy ------------------------------------------------------------------
    def encode_boxes(self, boxes: torch.Tensor, ref_xy: torch.Tensor, img_wh: ImageSize) -> torch.Tensor:
        """Boxes ``[n, 4]`` (x1, y1, x2, y2) pixels, refs ``[n, 2]``, image size ``(w, h)`` or
        per-box sizes ``[n, 2]`` → bins ``[n, 4]`` in the field order x1, y1, x2, y2."""
        corners = boxes.reshape(*boxes.shape[:-1], 2, 2)
        return self.encode(corners, ref_xy.unsqueeze(-2), self._per_item(img_wh)).reshape(boxes.shape)

    def decode_boxes(self, bins: torch.Tensor, ref_xy: torch.Tensor, img_wh: ImageSize) -> torch.Tensor:
        """Bins ``[n, 4]`` → boxes ``[n, 4]`` pixels (corners as decoded, not reordered)."""
        corners = bins.reshape(*bins.shape[:-1], 2, 2)
        return self.decode(corners, ref_xy.unsqueeze(-2), self._per_item(img_wh)).reshape(bins.shape)

    # -- polygons [n, K, 2] -----------------------------------------------------------------
    def encode_polygons(self, polygons: torch.Tensor, ref_xy: torch.Tensor, img_wh: ImageSize) -> torch.Tensor:
        """Polygons ``[n, K, 2]`` pixels, refs ``[n, 2]`` → bins ``[n, K, 2]``; ``.flatten(-2)``
        gives the field order x1, y1, ..., xK, yK."""
        return self.encode(polygons, ref_xy.unsqueeze(-2), self._per_item(img_wh))

    def decode_polygons(self, bins: torch.Tensor, ref_xy: torch.Tensor, img_wh: ImageSize) -> torch.Tensor:
        """Bins ``[n, K, 2]`` → polygons ``[n, K, 2]`` pixels."""
        return self.decode(bins, ref_xy.unsqueeze(-2), self._per_item(img_wh))
