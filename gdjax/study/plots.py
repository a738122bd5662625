"""Matplotlib figures for comparing runs: loss curves, learning-rate sweeps, contours, fitted lines.

Matplotlib is imported inside the functions, so `import gdjax.study.plots` stays cheap and a headless
library user who never plots never loads it. Every function builds a `matplotlib.figure.Figure`
with the object-oriented API (no `pyplot`, no global state, no GUI backend) and returns it;
`save(fig, path)` writes it atomically. Pass `ax=` to draw into an axes of your own figure instead.

Inputs are plain: loss arrays, `Trace`s (one run, or a sweep's with a leading lane axis), lists of
summary dicts. A sweep result is accepted by duck typing (`.trace`, `.coords`, `.summary()`), so
this module does not depend on `gdjax.sweep`. What `gdjax.sweep` itself returned can also be drawn
as `gdjax report` draws a study: `loss_curves(result)` of several optimizers (or of more
configurations than a legend holds) builds `gdjax.study.results(result)` and draws
`gdjax.study.figures.loss_curves` (each optimizer's best configuration, seeds as a band).

Colours are consistent across figures: a rule name (`sgd`, `momentum`, `adam`, ...) always gets the
colour in `RULE_COLORS`; diverged and non-finite runs are always drawn with the red markers of
`STATUS_STYLES`, so "red x" means "blew up" in every figure.

Example:
  >>> import gdjax
  >>> from gdjax import rules
  >>> from gdjax.study import plots
  >>> from gdjax.loop import run
  >>> X, y = gdjax.data.house_prices()
  >>> cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
  >>> trace = run(cost, rules.sgd(0.05), gdjax.init_linear(1), (X, y), num_steps=500)
  >>> fig = plots.loss_curves({"sgd": trace}, f_star=gdjax.reference.optimal_cost(X, y))
  >>> plots.save(fig, "/tmp/loss.png")
  '/tmp/loss.png'
"""

from gdjax.study.curveplots import loss_curves, metric_curves  # noqa: F401  (re-exported)
from gdjax.study.landscapeplots import contour, fitted_line  # noqa: F401  (re-exported)
from gdjax.study.plotstyle import (  # noqa: F401  (re-exported; report.py and a test use two privates)
    PALETTE,
    RULE_COLORS,
    STATUS_COLORS,
    STATUS_STYLES,
    StatusStyle,
    _group_colors,
    _legend,
    abbreviate,
    color_for,
    config_labels,
    save,
    status_colors,
)
from gdjax.study.sweepplots import learning_rate_sweep, learning_rate_sweep_from  # noqa: F401  (re-exported)

__all__ = [
    "PALETTE",
    "RULE_COLORS",
    "STATUS_COLORS",
    "STATUS_STYLES",
    "StatusStyle",
    "color_for",
    "config_labels",
    "contour",
    "fitted_line",
    "learning_rate_sweep",
    "learning_rate_sweep_from",
    "loss_curves",
    "save",
    "status_colors",
]
