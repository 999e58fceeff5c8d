"""The language-guided image tokenizer: image + instruction → M image tokens."""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from visionllm.instructions.category_set import IMAGE_PLACEHOLDER
from visionllm.models.components import build_optional
from visionllm.registry import MODELS
from visionllm.tasks import task_of_instruction

from . import point_appearance, relational_alignment  # noqa: F401  (register the optional parts)
from .positional_encoding import PointPositionEmbedding
from .token_loss import TokenLoss

# prior probability 0.01 that a token is an object / scores a name, as in focal-loss detectors
_PRIOR_LOGIT = -4.595


@MODELS.register_module()
class ImageTokenizer(nn.Module):
    """backbone → text encoder → per-level fusion → deformable encoder → decoder → tokens.

    Args:
        backbone: config of a backbone returning ``num_levels`` maps at ``embed_dims``.
        text_encoder: config of the instruction encoder (``TextEncoder``).
        fusion: config of the language fusion (``LanguageFusion`` by default); ``None`` turns
            the fusion off (an ablation: the image tokens then ignore the instruction).
        transformer: config of the ``DeformableTransformer``.
        embed_dims: width shared by all parts and of the output tokens.
        loss: keyword arguments of :class:`TokenLoss` (L_tok).
        aux_loss: apply L_tok to every decoder layer's tokens too (keys ``d{i}.loss_tok_*``).
        freeze_backbone: stage 2 of the paper schedule freezes the backbone.
        token_appearance: registry config of a module adding features of the input pixels around
            each token's reference point (``PointAppearanceEmbedding``; deep features trained on
            object kinds lose colour, which text and referring expressions ask for), or None.
        relational_alignment: registry config of a module refining the name alignment by
            letting the tokens compare with each other (``RelationalAlignment``; relative
            expressions such as "the square on the left" are about the other objects), or None
            for the plain per-token alignment.

    Always part of the architecture:

    - the backbone of a padded image runs on its valid area only, so a padded batch gives every
      image exactly the tokens it gets alone (convolutions would otherwise see the padding near
      the border); same-size batches without padding run batched. (Batch-norm statistics, when
      trained, then come from single images; the paper configs keep the ResNet norms frozen.)
    - each token gets an embedding of its reference point (``PointPositionEmbedding``): the
      decoder's tokens otherwise carry their position only implicitly, and referring
      expressions and questions ask "left", "bottom".
    - the name alignment (``loss_tok_cls`` in L_tok): each token scores the instruction's
      category names (or the referring expression), embedded by the text encoder, and a
      matched token must score its object's name. It teaches the visual features what the
      objects are directly, not only through the long path of the LLM's class readout.

    The position and appearance embeddings and the relational correction start at zero
    (:meth:`init_weights`).
    """

    def __init__(self, backbone: Dict, text_encoder: Dict, transformer: Dict, fusion: Optional[Dict] = dict(),  # noqa: B006 (never mutated)
                 embed_dims: int = 256, loss: Optional[Dict] = None, aux_loss: bool = True,
                 freeze_backbone: bool = False,
                 token_appearance: Optional[Dict] = dict(type="PointAppearanceEmbedding"),  # noqa: B006
                 relational_alignment: Optional[Dict] = dict(type="RelationalAlignment")):  # noqa: B006
        super().__init__()
        self.embed_dims = embed_dims
        self.backbone = MODELS.build(dict(embed_dims=embed_dims, **backbone))
        self.text_encoder = MODELS.build(dict(type="TextEncoder", embed_dims=embed_dims, **text_encoder))
        num_levels = self.backbone.num_levels
        self.fusion = None if fusion is None else MODELS.build(
            dict(type="LanguageFusion", embed_dims=embed_dims, num_levels=num_levels, **fusion))
        self.transformer = MODELS.build(
            dict(type="DeformableTransformer", embed_dims=embed_dims, num_levels=num_levels, **transformer))
        self.objectness = nn.Linear(embed_dims, 1)
        self.token_position = PointPositionEmbedding(embed_dims)
        self.token_appearance = build_optional(token_appearance, embed_dims=embed_dims)
        self.name_query = nn.Linear(embed_dims, embed_dims)
        self.name_bias = nn.Parameter(torch.full((), _PRIOR_LOGIT))
        self.relational_alignment = build_optional(relational_alignment, embed_dims=embed_dims)
        self.token_loss = TokenLoss(**(loss or {}))
        self.aux_loss = aux_loss
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)

    def init_weights(self) -> None:
        """The new parts' starting values: objectness and name biases at the prior logit, the
        position / appearance embeddings and the relational correction at zero. The backbone,
        text encoder and transformer keep what their builds gave them (pretrained weights)."""
        if not self.objectness.weight.is_meta:
            nn.init.constant_(self.objectness.bias, _PRIOR_LOGIT)
            nn.init.constant_(self.name_bias, _PRIOR_LOGIT)
        for part in (self.token_position, self.token_appearance, self.relational_alignment):
            if part is not None:
                part.init_weights()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def extract_features(self, images: torch.Tensor, image_masks: torch.Tensor):
        """Backbone levels and their padding masks (True = padding)."""
        valid_h = (~image_masks[:, :, 0]).sum(1).tolist()
        valid_w = (~image_masks[:, 0, :]).sum(1).tolist()
        height, width = images.shape[-2:]
        if all(h == height and w == width for h, w in zip(valid_h, valid_w)):
            feats = self.backbone(images)
            masks = [F.interpolate(image_masks[:, None].float(), size=f.shape[-2:]).bool()[:, 0] for f in feats]
            return feats, masks
        per_image = [self.backbone(images[i:i + 1, :, :h, :w]) for i, (h, w) in enumerate(zip(valid_h, valid_w))]
        feats, masks = [], []
        for lvl in range(len(per_image[0])):
            maps = [p[lvl] for p in per_image]
            h_max = max(m.shape[-2] for m in maps)
            w_max = max(m.shape[-1] for m in maps)
            mask = images.new_ones(len(maps), h_max, w_max, dtype=torch.bool)
            for i, m in enumerate(maps):
                mask[i, :m.shape[-2], :m.shape[-1]] = False
            feats.append(torch.cat([F.pad(m, (0, w_max - m.shape[-1], 0, h_max - m.shape[-2])) for m in maps]))
            masks.append(mask)
        return feats, masks

    def forward(self, images: torch.Tensor, image_masks: Optional[torch.Tensor], texts: Sequence[str],
                text_pad_to_length: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """images ``[B, 3, H, W]`` normalised; image_masks ``[B, H, W]`` True = padding (or None);
        texts: one instruction per image.

        Returns ``embeds [B, M, C]``, ``reference_points [B, M, 2]`` (cx, cy) in [0, 1] of each
        image's valid area, ``objectness_logits [B, M]`` and the encoder's ``memory_features``
        (see ``DeformableTransformer.forward``).
        """
        if image_masks is None:
            image_masks = images.new_zeros(images.shape[0], *images.shape[-2:], dtype=torch.bool)
        feats, masks = self.extract_features(images, image_masks)
        text, text_padding = self.text_encoder(list(texts), pad_to_length=text_pad_to_length)
        if self.fusion is not None:
            feats = self.fusion(feats, text, text_padding)
        out = self.transformer(feats, masks)
        layer_embeds = out["layer_embeds"]
        # Reference points detached: position and pixels are read, not pulled on (the points
        # have their own loss).
        layer_embeds = [e + self.token_position(p.detach()) for e, p in zip(layer_embeds, out["layer_reference_points"])]
        if self.token_appearance is not None:
            layer_embeds = [e + self.token_appearance(images, image_masks, p.detach())
                            for e, p in zip(layer_embeds, out["layer_reference_points"])]
        outputs = dict(embeds=layer_embeds[-1], reference_points=out["reference_points"],
                       objectness_logits=self.objectness(layer_embeds[-1]).squeeze(-1),
                       memory_features=out["memory_features"])
        if self.aux_loss:
            # earlier decoder layers get the same loss (Deformable-DETR's auxiliary losses)
            outputs["aux_objectness_logits"] = [self.objectness(e).squeeze(-1) for e in layer_embeds[:-1]]
            outputs["aux_reference_points"] = out["layer_reference_points"][:-1]
            outputs["aux_embeds"] = layer_embeds[:-1]
        return outputs

    def name_embeddings(self, names: Sequence[str]) -> torch.Tensor:
        """``[n, C]``: the text encoder's features of each name, averaged over its tokens."""
        return self._encode_names(names)[0]

    def _encode_names(self, names: Sequence[str]):
        """Pooled names ``[n, C]`` and, with the relational alignment, their side weights ``[n, 5]``."""
        feats, padding = self.text_encoder(list(names))
        valid = (~padding).unsqueeze(-1).to(feats.dtype)
        pooled = (feats * valid).sum(1) / valid.sum(1).clamp(min=1)
        if self.relational_alignment is None:
            return pooled, None
        return pooled, self.relational_alignment.side_weights(pooled, feats, padding)

    def _encoded_names(self, names: tuple):
        """``_encode_names``, remembered for the last set of names while no gradient is recorded:
        a category set asked of image after image is encoded once. The memo is keyed by the
        encoders' weights (their storage and in-place version), so loading or training them
        starts afresh."""
        if torch.is_grad_enabled():
            return self._encode_names(names)
        modules = [self.text_encoder] + ([self.relational_alignment] if self.relational_alignment is not None else [])
        weights = tuple((p.data_ptr(), p._version) for m in modules for p in m.parameters())
        memo = getattr(self, "_names_memo", None)
        if memo is None or memo[0] != (names, weights):
            memo = ((names, weights), self._encode_names(names))
            self._names_memo = memo
        return memo[1]

    def name_logits(self, embeds: torch.Tensor, names: torch.Tensor, points: Optional[torch.Tensor] = None,
                    side_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Token-to-name logits ``[M, n]`` of one image's tokens ``[M, C]``; with the tokens'
        reference points ``[M, 2]`` the relational refinement (when configured) is applied
        (``side_weights [n, 5]``: see ``RelationalAlignment.side_weights``)."""
        logits = self.name_query(embeds) @ names.t() / embeds.shape[-1] ** 0.5 + self.name_bias
        if self.relational_alignment is not None and points is not None:
            logits = self.relational_alignment(embeds, points.detach(), names, logits, side_weights)
        return logits

    def instruction_relevance(self, embeds: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """``[B, M]`` logits of how well each token ``embeds [B, M, C]`` matches its whole
        instruction: the name alignment with the instruction text as the name. For a question
        ("what color is the triangle?") the top tokens are those on the object asked about."""
        names = self.name_embeddings([text.replace(IMAGE_PLACEHOLDER, " ") for text in texts])
        return torch.stack([self.name_logits(tokens, name[None])[:, 0] for tokens, name in zip(embeds, names)])

    def loss(self, outputs: Dict[str, torch.Tensor], data_samples: List) -> Dict[str, torch.Tensor]:
        """L_tok: objectness focal loss + L1 of matched reference points to gt box centres
        + token-to-name alignment (``loss_tok_cls``)."""
        centres, labels, supervised = [], [], []
        for sample in data_samples:
            h, w = sample.metainfo["img_shape"][:2]
            instances = sample.gt_instances if "gt_instances" in sample else {}
            gt = instances.bboxes if "bboxes" in instances else torch.zeros(0, 4)
            gt = torch.as_tensor(gt, dtype=torch.float32, device=outputs["reference_points"].device).reshape(-1, 4)
            scale = gt.new_tensor([w, h])
            centres.append((gt[:, :2] + gt[:, 2:]) / 2 / scale)
            gt_labels = instances.labels if "labels" in instances else torch.zeros(0)
            labels.append(torch.as_tensor(gt_labels, dtype=torch.long, device=gt.device).reshape(-1))
            # Box tasks annotate every object asked for (none = none there); a caption or question
            # only tells where objects are when its reader was given their boxes.
            supervised.append(task_of_instruction(sample.instruction).structured or len(gt) > 0)
        layers = [(outputs["objectness_logits"], outputs["reference_points"], outputs.get("embeds"))]
        layers += list(zip(outputs.get("aux_objectness_logits", []), outputs.get("aux_reference_points", []),
                           outputs.get("aux_embeds", [])))
        names_of = None
        if "embeds" in outputs:
            names_of = outputs.get("name_table") or self.names_of(data_samples, outputs["reference_points"].device)
        losses = {}
        for i, (logits, points, embeds) in enumerate(layers):
            class_logits = None
            if names_of is not None:
                class_logits = [None if names is None else self.name_logits(embeds[b], names[0], points[b], names[1])
                                for b, names in enumerate(names_of)]
            prefix = "" if i == 0 else f"d{i - 1}."
            for name, value in self.token_loss(logits, points, centres, class_logits, labels, supervised).items():
                losses[prefix + name] = value
        return losses

    def token_name_logits(self, outputs: Dict[str, torch.Tensor], data_samples: List) -> List:
        """Per sample the logits ``[M, n]`` of every image token for each of the instruction's
        names (None for a sample without names). The name
        embeddings are kept in ``outputs['name_table']`` so that :meth:`loss` reuses them."""
        outputs["name_table"] = self.names_of(data_samples, outputs["embeds"].device)
        return [None if names is None else self.name_logits(outputs["embeds"][b], names[0],
                                                            outputs["reference_points"][b], names[1])
                for b, names in enumerate(outputs["name_table"])]

    def names_of(self, data_samples: List, device) -> List[Optional[tuple]]:
        """Per sample the embeddings ``[n, C]`` of its instruction's names and their side weights
        ``[n, 5]`` (None without the relational alignment); each distinct name of the batch is
        encoded once."""
        per_sample = [list(sample.metainfo.get("categories") or []) for sample in data_samples]
        distinct = list(dict.fromkeys(name for names in per_sample for name in names))
        if not distinct:
            return [None] * len(per_sample)
        table, sides = self._encoded_names(tuple(distinct))
        row = {name: i for i, name in enumerate(distinct)}
        result = []
        for names in per_sample:
            rows = [row[n] for n in names]
            result.append((table[rows].to(device), None if sides is None else sides[rows].to(device))
                          if names else None)
        return result
