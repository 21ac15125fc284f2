"""QC outputs: the tri-planar PNG and the self-contained HTML report."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alzmri.preprocessing.qc_figure import save_qc_figure
from alzmri.preprocessing.qc_report import write_qc_html

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def ellipsoid(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy bright ellipsoid and its mask."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    mask = np.sqrt((grid**2).sum(axis=0)) < 0.8
    image = mask * 1.0 + np.random.default_rng(seed).normal(0, 0.05, shape)
    return image.astype(np.float32), mask


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert 1_000 < len(data) < 200_000
    assert not list(path.parent.glob(".tmp-*")), "atomic write left a temporary file"


def test_qc_figure_with_masks(tmp_path: Path) -> None:
    before, bmask = ellipsoid((24, 28, 20))
    after, amask = ellipsoid((32, 32, 32), seed=1)
    out = tmp_path / "qc" / "sub-01_ses-01.png"
    save_qc_figure(out, before, after, bmask, amask, title="sub-01 ses-01")
    assert_png(out)


@pytest.mark.parametrize("case", ["constant", "empty_mask", "no_mask", "nan"])
def test_qc_figure_degenerate(tmp_path: Path, case: str) -> None:
    before, bmask = ellipsoid((24, 28, 20))
    after, amask = ellipsoid((20, 20, 20), seed=2)
    if case == "constant":
        before = np.full_like(before, 3.0)
    elif case == "empty_mask":
        bmask = np.zeros_like(bmask)
    elif case == "no_mask":
        bmask = amask = None
    elif case == "nan":
        before = np.full_like(before, np.nan)
    out = tmp_path / f"{case}.png"
    save_qc_figure(out, before, after, bmask, amask)
    assert_png(out)


def test_qc_figure_rejects_mismatched_mask(tmp_path: Path) -> None:
    before, _ = ellipsoid((24, 28, 20))
    with pytest.raises(ValueError, match="mask shape"):
        save_qc_figure(tmp_path / "x.png", before, before, np.ones((5, 5, 5), bool))
    assert not (tmp_path / "x.png").exists()


@pytest.fixture()
def report(tmp_path: Path) -> Path:
    image, mask = ellipsoid((24, 28, 20))
    fig_dir = tmp_path / "figures"
    save_qc_figure(fig_dir / "a.png", image, image, mask, mask)
    save_qc_figure(fig_dir / "c.png", image, image)
    qc = pd.DataFrame(
        {
            "participant_id": ["sub-A", "sub-B", "sub-C"],
            "session_id": ["ses-01", "ses-01", "ses-02"],
            "status": ["done", "failed", "cached"],
            "warnings": ["", np.nan, "low mask coverage; odd spacing"],
            "error": [np.nan, "boom <script>alert(1)</script> & more", np.nan],
            "figure": ["figures/a.png", np.nan, str(fig_dir / "c.png")],
            "brain_ml": [1234.5678, np.nan, 1100.25],
            "mask_coverage": [0.123456, np.nan, 0.0987],
            "seconds_n4": [3.14159, 0.5, 12],
            "skull_strip_method": ["threshold", "threshold", "<b>hd-bet</b>"],
        }
    )
    return write_qc_html(qc, tmp_path / "qc.html")


def test_qc_html_embeds_figures_and_orders_rows(report: Path) -> None:
    assert report.exists()
    text = report.read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") == 2
    assert "no image" in text
    # Failures first, then warnings, then the rest.
    positions = [text.index(f">{pid}<") for pid in ("sub-B", "sub-C", "sub-A")]
    assert positions == sorted(positions)
    assert re.search(r'<tr class="failed">[^\n]*sub-B', text)
    assert re.search(r'<tr class="warn">[^\n]*sub-C', text)


def test_qc_html_escapes_and_is_self_contained(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert text.count("<script") == 1  # only the report's own sorter
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in text
    assert "<b>hd-bet</b>" not in text and "&lt;b&gt;hd-bet&lt;/b&gt;" in text
    assert "http://" not in text and "https://" not in text
    assert not re.search(r'(src|href)="(?!data:)', text), "external resource reference"


def test_qc_html_summary_and_numbers(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert "3 scans: 1 done, 1 cached, 1 failed, 1 with warnings" in text
    assert ">1235<" in text  # large value: no decimals
    assert ">0.123<" in text  # 3 significant digits
    assert ">3.14<" in text
    assert 'data-sort="0.123456"' in text  # sorting uses the full value


def test_qc_html_missing_figure_file(tmp_path: Path) -> None:
    qc = pd.DataFrame(
        {"participant_id": ["sub-X"], "session_id": ["ses-01"], "status": ["done"],
         "warnings": [""], "error": [np.nan], "figure": ["does/not/exist.png"]}
    )
    out = write_qc_html(qc, tmp_path / "out" / "qc.html", figure_dir=tmp_path)
    text = out.read_text(encoding="utf-8")
    assert "no image" in text and "data:image/png" not in text
    assert "1 scans: 1 done, 0 cached, 0 failed, 0 with warnings" in text
