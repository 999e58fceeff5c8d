"""Pictures of predictions: boxes, polygons, masks and text drawn on the image (PIL only)."""
import os
import textwrap

import numpy as np
from PIL import Image, ImageDraw

_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40), (128, 0, 0), (0, 0, 128)]


def colour(index: int):
    return _PALETTE[index % len(_PALETTE)]


def draw_result(image: np.ndarray, result, out_file: str, score_threshold: float = 0.3) -> str:
    """Draw ``result`` (a ``VisionLLMResult``) on the RGB ``image`` and save it as ``out_file``.

    Small images are enlarged so labels stay readable.
    """
    canvas = Image.fromarray(image).convert("RGB")
    scale = max(1.0, 384.0 / max(canvas.size))
    if scale > 1.0:
        canvas = canvas.resize((round(canvas.width * scale), round(canvas.height * scale)), Image.NEAREST)
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    keep = [i for i, s in enumerate(result.scores.tolist()) if s >= score_threshold or result.task == "grounding"]
    for i in keep:
        label = int(result.labels[i])
        rgb = colour(label)
        if result.masks is not None and i < len(result.masks):
            mask = Image.fromarray(result.masks[i].astype(np.uint8) * 90).resize(canvas.size, Image.NEAREST)
            overlay.paste(Image.new("RGBA", canvas.size, rgb + (255,)), (0, 0), mask)
        if result.polygons is not None and i < len(result.polygons):
            points = [(float(x) * scale, float(y) * scale) for x, y in result.polygons[i]]
            draw.line(points + points[:1], fill=rgb + (255,), width=2)
        x1, y1, x2, y2 = (float(v) * scale for v in result.boxes[i])
        draw.rectangle([x1, y1, x2, y2], outline=rgb + (255,), width=2)
        caption = f"{result.categories[label]} {float(result.scores[i]):.2f}"
        draw.rectangle([x1, max(0, y1 - 12), x1 + 6 * len(caption) + 4, max(12, y1)], fill=rgb + (200,))
        draw.text((x1 + 2, max(0, y1 - 12)), caption, fill=(255, 255, 255, 255))
    if result.text is not None:
        lines = textwrap.wrap(result.text, width=max(20, canvas.width // 7)) or [""]
        draw.rectangle([0, canvas.height - 14 * len(lines) - 4, canvas.width, canvas.height], fill=(0, 0, 0, 160))
        for row, line in enumerate(lines):
            draw.text((4, canvas.height - 14 * (len(lines) - row) - 2), line, fill=(255, 255, 255, 255))
    picture = Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB")
    os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
    picture.save(out_file)
    return out_file
