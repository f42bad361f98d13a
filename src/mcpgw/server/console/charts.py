"""Charts as inline SVG, drawn on the server: no script, no library, nothing fetched.

Owns `bars`: one series of values per day as bars, with an optional limit drawn as a dashed line
(a daily budget) and bars over it marked. Every label is escaped text; the page's content
security policy allows no script, and SVG inline needs none.
"""

from __future__ import annotations

from collections.abc import Sequence

from mcpgw.server.console.layout import esc

WIDTH, HEIGHT, PAD = 560, 160, 28


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def bars(
    labels: Sequence[str], values: Sequence[float], *, title: str, limit: float | None = None, unit: str = ""
) -> str:
    """A bar chart of `values` (one per label, e.g. per day), against `limit` when there is one."""
    top = max([*values, limit or 0.0, 1e-9])
    step = (WIDTH - 2 * PAD) / max(1, len(values))
    scale = (HEIGHT - 2 * PAD) / top
    parts = [
        f'<svg class="chart" role="img" aria-label="{esc(title)}" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
        f'<title>{esc(title)}</title><text x="{PAD}" y="16" font-size="12">{esc(title)}</text>',
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#adb5bd"/>',
    ]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        height = value * scale
        x = PAD + i * step + step * 0.15
        over = limit is not None and value > limit
        fill = "#b02a37" if over else "#3d6fb6"
        parts.append(
            f'<rect class="bar" data-label="{esc(label)}" data-value="{value:g}" x="{x:.1f}" '
            f'y="{HEIGHT - PAD - height:.1f}" width="{step * 0.7:.1f}" height="{height:.1f}" fill="{fill}">'
            f"<title>{esc(label)}: {esc(_fmt(value))}{esc(unit)}</title></rect>"
        )
        if len(labels) <= 16:
            parts.append(
                f'<text x="{x + step * 0.35:.1f}" y="{HEIGHT - PAD + 12}" font-size="9" text-anchor="middle">'
                f"{esc(label[-5:])}</text>"
            )
    if limit is not None:
        y = HEIGHT - PAD - limit * scale
        parts.append(
            f'<line class="limit" x1="{PAD}" y1="{y:.1f}" x2="{WIDTH - PAD}" y2="{y:.1f}" stroke="#b02a37" '
            f'stroke-dasharray="4 3"/><text x="{WIDTH - PAD}" y="{y - 3:.1f}" font-size="10" '
            'text-anchor="end" '
            f'fill="#b02a37">budget {esc(_fmt(limit))}{esc(unit)}</text>'
        )
    parts.append(f'<text x="4" y="{PAD + 4}" font-size="9">{esc(_fmt(top))}</text></svg>')
    return "".join(parts)
