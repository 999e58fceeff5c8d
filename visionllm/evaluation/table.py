"""Plain-text result tables (one per task) printed by the metrics."""
from typing import Sequence

from mmengine.logging import print_log


def format_table(title: str, header: Sequence[str], rows: Sequence[Sequence]) -> str:
    cells = [[str(h) for h in header]] + [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    body = [fmt(r) for r in cells[1:]]
    return "\n".join([title, line, fmt(cells[0]), line, *body, line])


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence], logger="current") -> str:
    text = format_table(title, header, rows)
    print_log("\n" + text, logger=logger)
    return text
