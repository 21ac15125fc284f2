"""Self-contained HTML QC report: one sortable row per scan with its embedded QC figure.

Everything (CSS, the table sorter, the PNG thumbnails as base64 ``data:`` URIs) lives inside
the single HTML file so it can be mailed, archived or opened offline without broken links.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
import os
from pathlib import Path

import pandas as pd

from alzmri.utils.atomic import atomic_path

# Columns shown in fixed places (or folded into the notes column) rather than as extras.
_FIXED = ("participant_id", "session_id", "status", "warnings", "error", "figure")

_CSS = """
body{font-family:system-ui,sans-serif;font-size:13px;margin:1em;color:#222}
h1{font-size:18px;margin:0 0 .3em}
.summary{margin:0 0 1em;color:#444}
table{border-collapse:collapse}
th,td{border:1px solid #ddd;padding:3px 6px;vertical-align:middle;text-align:left}
th{background:#f3f3f3;position:sticky;top:0;cursor:pointer;user-select:none;white-space:nowrap}
th.nosort{cursor:default}
th[data-dir=asc]::after{content:" \\25B2"}
th[data-dir=desc]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.failed td{background:#fbe0e0}
tr.warn td{background:#fff3d6}
td.notes{max-width:28em;white-space:pre-wrap}
img.thumb{height:90px;cursor:zoom-in;display:block}
img.thumb.big{position:fixed;top:50%;left:50%;transform:translate(-50%,-50%);height:auto;
 max-width:95vw;max-height:95vh;z-index:10;box-shadow:0 0 0 100vmax rgba(0,0,0,.6);cursor:zoom-out}
.noimg{color:#888;font-style:italic}
"""

# Sorts by each cell's data-sort value: numerically when every non-empty value in the column
# is a number, else lexically; empty cells always go last. Clicking again reverses.
_JS = """
document.querySelectorAll("th[data-col]").forEach(function(th){
 th.addEventListener("click",function(){
  var table=th.closest("table"),body=table.tBodies[0],col=+th.dataset.col;
  var dir=th.dataset.dir==="asc"?"desc":"asc";
  table.querySelectorAll("th").forEach(function(h){delete h.dataset.dir;});
  th.dataset.dir=dir;
  var rows=Array.prototype.slice.call(body.rows);
  var key=function(r){return r.cells[col].dataset.sort;};
  var numeric=rows.every(function(r){var v=key(r);return v===""||isFinite(Number(v));});
  var sign=dir==="asc"?1:-1;
  rows.sort(function(a,b){
   var x=key(a),y=key(b);
   if(x===""||y===""){return (x==="")-(y==="");}
   return sign*(numeric?Number(x)-Number(y):x.localeCompare(y,undefined,{numeric:true}));
  });
  rows.forEach(function(r){body.appendChild(r);});
 });
});
document.querySelectorAll("img.thumb").forEach(function(img){
 img.addEventListener("click",function(){img.classList.toggle("big");});
});
"""


def write_qc_html(
    qc: pd.DataFrame,
    out_path: str | os.PathLike[str],
    figure_dir: str | os.PathLike[str] | None = None,
    title: str = "alzmri preprocessing QC",
) -> Path:
    """Write a single self-contained HTML QC report and return its path.

    Rows are ordered failures first, then scans with warnings, then the rest (the original order
    is kept inside each group). Failed rows are tinted red, rows with warnings amber.

    Args:
        qc: one row per scan with ``participant_id``, ``session_id``, ``status`` (``done``,
            ``cached`` or ``failed``), ``warnings`` (``"; "``-separated, may be empty/NaN),
            ``error`` (failed rows), ``figure`` (PNG path or NaN) and any other columns, which
            are shown after the fixed ones.
        out_path: HTML file to write (atomically).
        figure_dir: folder that relative ``figure`` paths are resolved against; defaults to
            ``out_path``'s folder.
        title: page heading and ``<title>``.

    Returns:
        ``out_path`` as a :class:`Path`.
    """
    out_path = Path(out_path)
    base = Path(figure_dir) if figure_dir is not None else out_path.parent
    qc = qc.reset_index(drop=True)
    status = qc["status"].map(_text).str.lower() if "status" in qc else pd.Series([""] * len(qc))
    warned = qc["warnings"].map(_text).str.strip() != "" if "warnings" in qc else pd.Series([False] * len(qc))
    rank = [0 if s == "failed" else 1 if w else 2 for s, w in zip(status, warned)]
    order = sorted(range(len(qc)), key=lambda i: rank[i])  # sorted() is stable: keeps input order
    extras = [c for c in qc.columns if c not in _FIXED]

    counts = {s: int((status == s).sum()) for s in ("done", "cached", "failed")}
    summary = (f"{len(qc)} scans: {counts['done']} done, {counts['cached']} cached, "
               f"{counts['failed']} failed, {int(warned.sum())} with warnings")

    headers = ["figure", "participant_id", "session_id", "status", "warnings / error", *map(str, extras)]
    head = "".join(
        '<th class="nosort">figure</th>' if i == 0 else f'<th data-col="{i}">{html.escape(h)}</th>'
        for i, h in enumerate(headers)
    )
    body = []
    for i in order:
        row = qc.iloc[i]
        cls = {0: "failed", 1: "warn"}.get(rank[i], "")
        cells = [_figure_cell(row.get("figure"), base)]
        cells += [_cell(row.get(c)) for c in ("participant_id", "session_id", "status")]
        cells.append(_notes_cell(row.get("warnings"), row.get("error")))
        cells += [_cell(row[c]) for c in extras]
        body.append(f'<tr class="{cls}">{"".join(cells)}</tr>')

    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n<p class=\"summary\">{html.escape(summary)}</p>\n"
        f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>\n"
        f"<script>{_JS}</script>\n</body></html>\n"
    )
    with atomic_path(out_path) as tmp:
        tmp.write_text(page, encoding="utf-8")  # explicit: ids or errors may be non-ASCII
    return out_path


def _missing(value: object) -> bool:
    """True for None / NaN / pd.NA (but not for list-like values, which pd.isna broadcasts)."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _text(value: object) -> str:
    """Plain string for a cell, empty for missing values."""
    return "" if _missing(value) else str(value)


def _format(value: object) -> tuple[str, str, bool]:
    """(shown text, sort key, is numeric) for one value; numbers shown with 3 significant digits."""
    if _missing(value):
        return "", "", False
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value), str(value), False
    v = float(value)
    if not math.isfinite(v):
        return str(v), "", True
    if isinstance(value, numbers.Integral) or v.is_integer() and abs(v) < 1e15:
        shown = f"{int(v):d}"
    elif abs(v) >= 1000:
        shown = f"{v:.0f}"  # e.g. brain volumes in ml: decimals are noise at this scale
    elif abs(v) < 1e-3:
        shown = f"{v:.2e}"
    else:
        shown = f"{v:.3g}"
    return shown, repr(v), True


def _cell(value: object) -> str:
    shown, key, numeric = _format(value)
    cls = ' class="num"' if numeric else ""
    return f'<td{cls} data-sort="{html.escape(key)}">{html.escape(shown)}</td>'


def _notes_cell(warnings: object, error: object) -> str:
    """Error first (it explains a failure), then one warning per line."""
    parts = [f"ERROR: {_text(error)}"] if _text(error).strip() else []
    parts += [w.strip() for w in _text(warnings).split(";") if w.strip()]
    text = "\n".join(parts)
    return f'<td class="notes" data-sort="{html.escape(text)}">{html.escape(text)}</td>'


def _figure_cell(figure: object, base: Path) -> str:
    """Thumbnail with the PNG embedded as base64, or "no image" when absent or unreadable."""
    if not _text(figure).strip():
        return '<td><span class="noimg">no image</span></td>'
    path = Path(_text(figure))
    path = path if path.is_absolute() else base / path
    try:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return f'<td><span class="noimg" title="{html.escape(str(path))}">no image</span></td>'
    return f'<td><img class="thumb" alt="QC figure" src="data:image/png;base64,{data}"></td>'
