"""report: a self-contained HTML page with every section, checked in headless Chromium."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from test_publish_support import curated_template

from lakecurate.catalog import report

CHROMIUM = "/usr/bin/chromium"
SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "report_screenshot.sh"


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory, sample_set):
    tpl = curated_template(spark, tmp_path_factory, sample_set)
    out = tmp_path_factory.mktemp("report") / "demo.html"
    rc = report.main(
        ["demo@2", "--lake", tpl["path"], "--out", str(out), "--thumbs", "6", "--json"]
    )
    assert rc == 0
    return tpl, out


def test_report_has_every_section_and_no_external_resources(built, capsys):
    tpl, out = built
    page = out.read_text()
    for section in report.SECTIONS:
        assert f'<section id="{section}">' in page
    assert page.count("<svg") >= 6  # funnel, clip, dups (exact), clusters, captions, resolution
    # thumbnails: 6 kept + 6 dropped, embedded as data URIs; dropped ones carry reasons
    samples = page.split('<section id="samples">')[1]
    assert len(re.findall(r'<img src="data:image/jpeg;base64,', samples)) == 12
    # dropped duplicates next to their keepers: pairs of figures, each with a picture
    pairs = page.split('<section id="duplicate-pairs">')[1].split("</section>")[0]
    assert pairs.count('<div class="pair">') == 6
    assert pairs.count("its keeper") == 6 and "dropped (exact 1.000)" in pairs
    dropped = page.split("<h3>dropped")[1]
    assert re.search(
        r"<b>(duplicate:exact|duplicate:phash|clip_score&lt;0.2|caption_words&lt;3)</b>", dropped
    )
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert f"{len(tpl['kept'][1])} samples" in page and "duplicate:phash" in page


def test_histogram_fills_empty_bins():
    rows = [{"bin": 2, "kept": True, "n": 3}, {"bin": 5, "kept": False, "n": 1}]
    labels, series = report.histogram(rows, 0.5)
    assert labels == ["1", "1.5", "2", "2.5"]
    assert series == {"kept": [3, 0, 0, 0], "dropped": [0, 0, 0, 1]}


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)",
)
def test_report_renders_in_headless_chromium(built, tmp_path):
    _, out = built
    png = tmp_path / "report.png"
    proc = subprocess.run(
        [str(SCRIPT), str(out), str(png), "1200x2400"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (1200, 2400)
        colors = im.convert("RGB").getcolors(maxcolors=1 << 20)
    # a rendered page, not a blank one: many colours (plots and thumbnails)
    assert colors is not None and len(colors) > 50


def test_report_cli_rejects_bad_refs(built, capsys):
    tpl, _ = built
    assert report.main(["demo@7", "--lake", tpl["path"]]) == 2
    assert "no version 7" in capsys.readouterr().err
