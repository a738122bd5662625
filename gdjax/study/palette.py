"""The colours of gdjax's figures: one per optimizer, the same in every figure and session.

`color_for(label)` is what every figure calls (`gdjax.study.figures`, `gdjax.study.plots`, the
report page): a known rule (or a label that starts with one, `"sgd lr=0.1"`) gets its colour in
`RULE_COLORS`, any other name a `PALETTE` colour chosen by a stable hash of the name. Red is kept
out of the palette: it means "diverged" in every figure (`plots.STATUS_STYLES`).
"""

from __future__ import annotations

import zlib

__all__ = ["PALETTE", "RULE_COLORS", "color_for", "rule_key"]

# Tableau 10 without its red, which is reserved for diverged / non-finite runs.
PALETTE: tuple[str, ...] = (
    "#1f77b4",  # blue
    "#ff7f0e",  # orange
    "#2ca02c",  # green
    "#9467bd",  # purple
    "#8c564b",  # brown
    "#e377c2",  # pink
    "#17becf",  # cyan
    "#bcbd22",  # olive
    "#7f7f7f",  # grey
)

RULE_COLORS: dict[str, str] = {
    "sgd": PALETTE[0],
    "gd": PALETTE[0],
    "momentum": PALETTE[1],
    "nesterov": PALETTE[2],
    "adam": PALETTE[3],
    "adagrad": PALETTE[4],
    "rmsprop": PALETTE[5],
    # Closed-form answers (the oracles) are black in every figure.
    "least squares": "#000000",
    "least_squares": "#000000",
    "closed form": "#000000",
    "reference": "#000000",
}


def rule_key(label: str) -> str:
    """The rule name a label starts with (`"sgd lr=0.1"` -> `"sgd"`), if it is a known rule."""
    text = str(label).strip().lower()
    if text in RULE_COLORS:
        return text
    head = text.replace("(", " ").replace(",", " ").split(" ", 1)[0]
    return head if head in RULE_COLORS else text


def color_for(label: str) -> str:
    """The colour of a rule (or a label starting with a rule name) in every gdjax figure.

    Known rules get `RULE_COLORS`; any other name gets a palette colour chosen from a stable hash of
    the name (so it does not change between figures or sessions).
    """
    key = rule_key(label)
    if key in RULE_COLORS:
        return RULE_COLORS[key]
    return PALETTE[zlib.crc32(key.encode()) % len(PALETTE)]
