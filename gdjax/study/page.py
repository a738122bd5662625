"""The report page: one self-contained `report.html` (figures embedded, no network) from `Results`.

`write_report(results, folder)` draws every registered figure that applies (`figures.FIGURES`),
writes each as a PNG into `folder/figures/`, and writes `folder/report.html` with:

- the problems (examples, parameters, `f*` and how it was obtained);
- each optimizer's best configuration per problem, with the median and interquartile range over
  seeds and the statuses of its lanes;
- with several optimizers: the performance-profile scores with bootstrap intervals, and the paired
  comparisons of every two optimizers (median difference with its interval, probability of
  improvement, Wilcoxon p-value), with a "best optimizer" sentence only where the comparison
  supports one;
- the figures, each with what it shows;
- provenance: run folders, machines, versions, commits.

The page opens offline: images are inlined as base64 data, and the style sheet is in the page.
"""

from __future__ import annotations

import base64
import datetime
import html
import itertools
import os
from collections.abc import Mapping

import numpy as np
import pandas as pd

from gdjax.io import format_number, write_bytes, write_text
from gdjax.study import figures as figures_lib
from gdjax.study.results_model import Results

__all__ = ["render", "write_report"]

SCORE_EPS = (1e-1, 1e-3, 1e-6)  # the targets the scores table reports
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.6rem 0; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #555; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.4rem 0.8rem; }
.verdict { background: #e8f5e9; border-left: 4px solid #2e7d32; padding: 0.4rem 0.8rem; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


# After loading, the page records how many of its figures decoded (`data-figures-loaded` of
# `data-figures` on <body>): what a browser test (and a reader's devtools) can check.
_LOADED = (
    "<script>window.addEventListener('load', () => { const im = Array.from(document.images); "
    "document.body.dataset.figures = im.length; "
    "document.body.dataset.figuresLoaded = im.filter(i => i.complete && i.naturalWidth > 0).length; });"
    "</script>"
)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, float | np.floating):
        return format_number(float(v))
    return str(v)


def _table(frame: pd.DataFrame) -> str:
    frame = frame.astype(object).where(frame.notna(), None)  # <NA> and NaN print as empty cells
    formatters = {c: _fmt for c in frame.columns}
    return frame.to_html(index=False, na_rep="", escape=True, formatters=formatters, border=0)


def _problems_table(r: Results) -> str:
    p = r.problems.rename(
        columns={
            "num_examples": "examples",
            "num_params": "parameters",
            "f_star": "f*",
            "f_star_source": "f* from",
        }
    )
    return _table(p.drop(columns=["data_fingerprint"]))


def _best_table(r: Results, by: str) -> str:
    best = r.best_configurations(by=by)
    # a setting shared by every row (a constant schedule) says nothing: left out
    keep = ["problem", "optimizer", *[c for c in r.config_columns if best[c].nunique(dropna=False) > 1]]
    tuned = ["tuning_median"] if "tuning_median" in best else []
    best = best[keep + tuned + ["median", "q25", "q75", "lanes", "statuses"]]
    if "batch_size" in best:
        best["batch_size"] = [("full" if pd.isna(b) else int(b)) for b in best["batch_size"]]
    names = {"median": f"median {by}", "q25": "25%", "q75": "75%", "tuning_median": "median on tuning seeds"}
    if tuned:
        names["median"] = f"median {by} (fresh seeds)"
    return _table(best.rename(columns=names))


def _protocol(r: Results) -> str:
    """The selection protocol, said once above the tables it applies to."""
    if r.tuning_seeds is None:
        return ""
    return (
        '<p class="note">Selection and reporting use different seeds: each optimizer\'s configuration is '
        f"chosen on the tuning seeds {list(r.tuning_seeds)}, and the tables, scores, comparisons and "
        f"profiles report it on the fresh seeds {r.fresh_seeds} only (no selection bias).</p>"
    )


def _scores(r: Results) -> str:

    variant = "both" if r.lanes["is_default"].any() else "tuned"
    table = pd.concat([r.scores(eps, unit="epochs", variant=variant) for eps in SCORE_EPS], ignore_index=True)
    text = [
        _fmt(s) if np.isnan(lo) else f"{_fmt(s)} [{_fmt(lo)}, {_fmt(hi)}]"
        for s, lo, hi in zip(table["score"], table["ci_low"], table["ci_high"], strict=True)
    ]
    wide = table.assign(text=text).pivot_table(
        index=["optimizer", "variant"], columns="eps", values="text", aggfunc="first", sort=False
    )
    wide.columns = [f"eps = {_fmt(float(e))}" for e in wide.columns]
    return _table(wide.reset_index())


def _comparisons(r: Results, by: str) -> tuple[str, str | None]:
    rows = []
    for a, b in itertools.combinations(list(dict.fromkeys(r.lanes["optimizer"])), 2):
        try:
            row = r.compare(a, b, by=by)
        except ValueError as err:  # no common seeds: say so in the table
            rows.append(pd.DataFrame([{"a": a, "b": b, "note": str(err)}]))
            continue
        rows.append(row)
    if not rows:
        return "", None, None
    table = pd.concat(rows, ignore_index=True)
    table = table[["a", "b", *[c for c in table.columns if c not in ("a", "b", "by", "mode")]]]
    text = _table(table)
    if r.lanes["problem"].nunique() > 1:
        # Pooled, a problem of large losses weighs most: each problem's own comparison shows where a
        # conclusion holds and where it flips.
        per = [
            r.compare(row["a"], row["b"], by=by, per_problem=True)
            for _, row in table.iterrows()
            if "note" not in table.columns or pd.isna(row["note"])
        ]
        if per:
            frame = pd.concat(per, ignore_index=True).drop(columns=["by", "mode", "num_problems"])
            frame = frame[
                ["a", "b", "problem", *[c for c in frame.columns if c not in ("a", "b", "problem")]]
            ]
            text += (
                f"<p>The same comparisons on each problem alone (its pairs only: {by} in that "
                "problem's units).</p>" + _table(frame)
            )
    return text, r.best_statement(by=by), r.verdict(by=by)


def write_report(
    results: Results,
    folder: str | os.PathLike,
    *,
    title: str | None = None,
    rendered: tuple[str, Mapping[str, bytes]] | None = None,
) -> str:
    """Writes `report.html` into `folder` (created if missing) and one PNG per figure into
    `folder/figures/` (the page itself embeds them: it can be moved or mailed alone).

    `rendered`: the page as `render(results, title=title)` returned it in another process (`gdjax
    run`'s drawing process, `gdjax.study.drawing`); only written here.

    Returns:
      The path of `report.html`.
    """
    from gdjax.study.runfolder import FIGURES  # here: `render` runs where JAX is not imported

    text, pngs = rendered if rendered is not None else render(results, title=title)
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    if pngs:  # no figure applies: no figures/
        os.makedirs(os.path.join(folder, FIGURES), exist_ok=True)
    for name, png in pngs.items():
        write_bytes(os.path.join(folder, FIGURES, f"{name}.png"), png)
    return write_text(os.path.join(folder, "report.html"), text)


def render(results: Results, *, title: str | None = None) -> tuple[str, dict[str, bytes]]:
    """The page's HTML text and its figures' PNG bytes by name (what `write_report` writes)."""
    r = results
    by = "suboptimality" if r.lanes["suboptimality"].notna().any() else "final_loss"
    several = r.lanes["optimizer"].nunique() > 1
    names = r.problems["problem"].tolist()
    title = title or "gdjax report: " + (
        ", ".join(names) if len(names) <= 3 else f"a suite of {len(names)} problems"
    )
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts.append(
        f"<p>{r.num_lanes} lanes, {_count(r.lanes['optimizer'].nunique(), 'optimizer')} on "
        f"{_count(len(r.problems), 'problem')}; written {html.escape(_now())}.</p>"
    )
    parts.append("<h2>Problems</h2>" + _problems_table(r))
    if (r.problems["f_star_source"] == "best found").any():
        parts.append(
            '<p class="note">Where f* is unknown (f* from: best found), suboptimality and targets are '
            "measured against the lowest loss any lane of that problem reached.</p>"
        )
    parts.append(
        f"<h2>Best configuration of each optimizer</h2><p>By the median over seeds of <code>{by}</code>; "
        "lanes that diverged count as infinitely bad.</p>" + _protocol(r) + _best_table(r, by)
    )
    if several:
        parts.append(
            "<h2>Scores</h2><p>Area under each optimizer's performance profile for tau in [1, 4], divided "
            "by 3 (1: fastest on every problem; 0: never within 4x of the fastest), time in epochs to "
            "reach f &le; f* + eps (f0 &minus; f*), with a bootstrap interval over problems.</p>" + _scores(r)
        )
        table, statement, verdict = _comparisons(r, by)
        parts.append(
            f"<h2>Paired comparisons</h2><p>Each optimizer at its best configuration, paired by problem and "
            f"seed on <code>{by}</code> (a &minus; b: negative favours a). p-value: Wilcoxon signed-rank.</p>"
            + table
        )
        if statement:
            parts.append(f'<p class="verdict">{html.escape(statement)}</p>')
        elif verdict:
            parts.append(f'<p class="note">{html.escape(verdict)}</p>')
    parts.append("<h2>Figures</h2>")
    pngs = figures_lib.render(r)
    for name, png in pngs.items():
        doc = figures_lib.FIGURES[name].doc
        image = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure id="{name}"><img alt="{html.escape(name)}" src="data:image/png;base64,{image}">'
            f"<figcaption><b>{html.escape(name)}</b>: {html.escape(doc)}</figcaption></figure>"
        )
    provenance = r.lanes[["run", "machine", "gdjax_version", "jax_version", "commit"]].drop_duplicates()
    parts.append("<h2>Provenance</h2>" + _table(provenance))
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>{_LOADED}</head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    return page, pngs


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")
