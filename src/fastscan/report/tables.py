"""Summary tables as HTML pages: Tables II, III and IV, and the GAN-departure table.

One page style for every table; the best value of each block is set in bold. Named ``tables``
rather than ``html`` so that it does not read as the standard library's :mod:`html`, which it uses.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fastscan.baselines import method_colour
from fastscan.train import describe_gan_steps

_TABLE_STYLE = (
    "<style>body{font-family:sans-serif;font-size:small}"
    "table{border-collapse:collapse;margin-bottom:1em}th,td{border:1px solid #999;padding:3px 6px}"
    "th{background:#eee}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "td.best{font-weight:bold}p.note{color:#555}</style>"
)
_STAT_FORMATS: dict[str, tuple[str, str]] = {
    "psnr": ("PSNR (dB)", "{:.2f}"),
    "ssim": ("SSIM", "{:.3f}"),
    "nrmse": ("NRMSE", "{:.3f}"),
}
_GROUP_HEADERS: dict[str, str] = {
    "model": "Model",
    "sample": "Sample",
    "ablation": "Ablation",
    "finetune": "Fine-tuning run",
}


def _html_page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>{_TABLE_STYLE}</head>\n<body>\n"
        f"<h3>{html.escape(title)}</h3>\n{body}\n</body></html>\n"
    )


def _mean_sd(mean: Any, sd: Any, fmt: str) -> str:
    if mean is None or pd.isna(mean) or not np.isfinite(float(mean)):
        return "–"
    text = fmt.format(float(mean))
    if sd is not None and not pd.isna(sd) and np.isfinite(float(sd)):
        text += " ± " + fmt.format(float(sd))
    return text


def gan_stage_notes(models: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """What each model's GAN stage trained, from its ``model.json`` (``gan_steps``).

    fastai's adaptive switcher gives the generator a batch only once the critic's loss is below
    ``train.gan.critic_thresh``. A critic that cannot tell restored tiles from HR targets keeps
    every batch, and the model's "gan" row is then the stage-1 generator: the reader of Table II
    must know that the two rows are one network. Models without the record (trained before it
    existed, or a resumed GAN stage that found every epoch done) get no note; a record that could
    not be read (None) is named.
    """
    notes = []
    for name, meta in models.items():
        steps = meta.get("gan_steps") if meta is not None else None
        readable = isinstance(steps, Mapping) and all(isinstance(steps.get(k), int) for k in ("generator", "critic"))
        if meta is None:
            notes.append(f"Model {name}: its model.json could not be read, so what its GAN stage trained is not known (see the report's log).")
        elif steps is not None and not readable:
            notes.append(f"Model {name}: its model.json's gan_steps is not two batch counts ({steps!r}), so what its GAN stage trained is not known.")
        elif steps:
            notes.append(f"Model {name}: {describe_gan_steps(steps, advice=True)}.")
    return notes


def table_html(table: pd.DataFrame, *, title: str, empty_note: str, notes: Sequence[str] = ()) -> str:
    """Render a summary table (Table II, III or IV) as an HTML page.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`fastscan.metrics.summarise`,
        :func:`~fastscan.metrics.ablation_table` or
        :func:`~fastscan.metrics.generalisation_table`.
    title : str
        Heading of the page.
    empty_note : str
        Paragraph shown instead of a table when `table` has no rows.
    notes : sequence of str, optional
        Paragraphs shown below the table (or the empty note), e.g. :func:`gan_stage_notes`.

    Returns
    -------
    str
        A complete HTML document: one row per method (and number of pairs),
        metrics as ``mean ± sd`` over images with the number of images ``n``;
        within each block of rows sharing the grouping columns the best PSNR
        and SSIM means (and the lowest NRMSE) are set in bold.
    """
    extra = "".join(f'\n<p class="note">{html.escape(note)}</p>' for note in notes)
    if table.empty:
        return _html_page(title, f'<p class="note">{html.escape(empty_note)}</p>{extra}')
    groups = [c for c in ("ablation", "finetune", "model", "sample") if c in table.columns]
    header = [_GROUP_HEADERS[c] for c in groups] + ["Method", "Training pairs", "n"]
    header += [label for label, _ in _STAT_FORMATS.values()]
    best: dict[tuple[Any, str], float] = {}
    for key, block in table.groupby(groups, sort=False) if groups else [((), table)]:
        for metric in _STAT_FORMATS:
            values = pd.to_numeric(block[f"{metric}_mean"], errors="coerce")
            values = values[np.isfinite(values)]
            if len(values):
                best[(key, metric)] = float(values.min() if metric == "nrmse" else values.max())
    body = []
    for _, row in table.iterrows():
        key = tuple(row[c] for c in groups)
        key = key[0] if len(key) == 1 else key
        cells = [f"<td>{html.escape(str(row[c]))}</td>" for c in groups]
        colour = method_colour(str(row["method"]))
        cells.append(f'<td><span style="color:{colour}">&#9632;</span> {html.escape(str(row["label"]))}</td>')
        pairs = row.get("pairs")
        cells.append(f'<td class="num">{"–" if pairs is None or pd.isna(pairs) else int(pairs)}</td>')
        cells.append(f'<td class="num">{int(row["n"])}</td>')
        for metric, (_, fmt) in _STAT_FORMATS.items():
            mean = row[f"{metric}_mean"]
            is_best = (key, metric) in best and not pd.isna(mean) and float(mean) == best[(key, metric)]
            cls = "num best" if is_best else "num"
            cells.append(f'<td class="{cls}">{_mean_sd(mean, row[f"{metric}_sd"], fmt)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    note = (
        '<p class="note">Mean ± sample standard deviation over the test images (frames); n counts the '
        "images. Bold: best value in each block. Infinite PSNR (exact reconstruction) is left out of the "
        "PSNR statistics.</p>"
    )
    return _html_page(title, f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>\n{note}{extra}")


def hallucination_html(table: pd.DataFrame) -> str:
    """Render the per-image departure table (:func:`fastscan.hallucination.hallucination_table`) as HTML."""
    title = "Departure of the GAN from the MSE generator beyond the noise level"
    if table.empty:
        return _html_page(title, '<p class="note">No restored test image has both the MSE generator and the GAN.</p>')
    summary = table.groupby(["model", "sample"], sort=True)["fraction_flagged"].agg(["mean", "max", "size"]).reset_index()
    lines = "".join(
        f"<li>{html.escape(str(r['model']))} · {html.escape(str(r['sample']))}: {100 * r['mean']:.2f} % of pixels "
        f"flagged on average (worst image {100 * r['max']:.2f} %, {int(r['size'])} images)</li>"
        for _, r in summary.iterrows()
    )
    header = ["Image", "Noise estimate", "Noise sd", "Threshold", "Flagged pixels", "Flagged further from HR"]
    rows = []
    for _, r in table.iterrows():
        image = f"{r['model']} / {r['sample']} / {r['session']} / {r['fov']}, frame {r['frame']}"
        away = r["flagged_away_share"]
        rows.append(
            "<tr>"
            f"<td>{html.escape(image)}</td><td>{html.escape(str(r['noise']))}</td>"
            f'<td class="num">{r["noise_sd"]:.4f}</td>'
            f'<td class="num">{r["threshold"]:.4f} ({r["k"]:g} × sd)</td>'
            f'<td class="num">{100 * r["fraction_flagged"]:.2f} %</td>'
            f'<td class="num">{"–" if pd.isna(away) else f"{100 * away:.0f} %"}</td>'
            "</tr>"
        )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return _html_page(
        title,
        f"<ul>{lines}</ul>\n<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>",
    )
