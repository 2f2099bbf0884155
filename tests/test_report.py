"""The evaluation report: intervals, agreement of CSV / markdown / HTML, and a real browser."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import scipy.signal as ss
from scipy import stats

from dereverb import audio
from dereverb.cli import main
from dereverb.errors import DereverbError
from dereverb.evaluate import EvalConfig, evaluate
from dereverb.report import compare_reports, confidence_interval, gains_markdown, paired_gains, write_csv

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SR = 16000
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def test_confidence_interval_hand_computed():
    # 1, 2, 3, 4: mean 2.5, s = sqrt(5/3), t(0.975, 3) = 3.182446 -> 3.182446 * 1.290994 / 2
    mean, half, n = confidence_interval([1.0, 2.0, 3.0, 4.0, math.nan])
    assert (mean, n) == (2.5, 4)
    assert half == pytest.approx(3.182446 * math.sqrt(5 / 3) / 2, rel=1e-6)
    assert confidence_interval([7.0])[1] != confidence_interval([7.0])[1]  # NaN: one value, no interval
    assert confidence_interval([math.nan])[2] == 0


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    """A small evaluation: 2 conditions x 2 files, 3 systems, cheap metrics, 2 examples."""
    root = tmp_path_factory.mktemp("report")
    x = audio.read(EXAMPLES / "speech_1688-142285-0003.flac", SR)[0][0]
    rng = np.random.default_rng(0)
    for cond, t60 in (("room_a", 0.3), ("room_b", 0.8)):
        for i in range(2):
            dry = x[int(1.5 * i * SR) :][: int(1.5 * SR)]
            n = int(t60 * SR)
            h = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n) * 0.3
            h[0] = 1.0
            rev = ss.fftconvolve(dry, h)[: dry.size]
            g = 0.5 / np.abs(rev).max()
            for kind, sig in (("reverb", rev * g), ("clean", dry * g)):
                (root / kind / cond).mkdir(parents=True, exist_ok=True)
                audio.write(root / kind / cond / f"f{i}.wav", sig, SR)
    cfg = EvalConfig(baselines=("unprocessed", "oracle-magnitude"), metrics=("stoi", "si_sdr", "cd", "llr"),
                     workers=1, examples=2)
    evaluate(root / "reverb", root / "out", root / "clean", {"copy": root / "reverb"}, cfg=cfg, progress=False)
    return root / "out"


def _expected(out: Path) -> dict[tuple[str, str, str], tuple[float, float, int]]:
    """(condition, system, metric) -> (mean, half width, n), computed here from per_file.csv."""
    with open(out / "per_file.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    metrics = [c for c in rows[0] if c not in ("file", "condition", "system")]
    want = {}
    for cond in sorted({r["condition"] for r in rows}) + ["all"]:
        for system in {r["system"] for r in rows}:
            for m in metrics:
                v = np.array([float(r[m]) for r in rows if r["system"] == system
                              and cond in ("all", r["condition"]) and r[m] != ""])
                half = stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
                want[(cond, system, m)] = (v.mean(), half, v.size)
    return want


def _parse_cell(text: str) -> tuple[float, float]:
    mean, _, half = text.partition("±")
    return float(mean), float(half)


class _Table(HTMLParser):
    """Rows of ``<table id=ID>`` (default ``summary``) as lists of cell texts."""

    def __init__(self, table_id: str = "summary"):
        super().__init__()
        self.rows, self._in, self._cell, self._id = [], False, None, table_id

    def handle_starttag(self, tag, attrs):
        if tag == "table" and dict(attrs).get("id") == self._id:
            self._in = True
        elif self._in and tag == "tr":
            self.rows.append([])
        elif self._in and tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._in = False
        elif self._in and tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _check_rows(rows: list[list[str]], metrics: list[str], want: dict) -> int:
    checked = 0
    for cond, system, n, *cells in rows:
        for m, text in zip(metrics, cells):
            mean, half, count = want[(cond, system, m)]
            got_mean, got_half = _parse_cell(text)
            decimals = 3 if m in ("stoi", "llr") else 2
            assert got_mean == pytest.approx(mean, abs=0.51 * 10**-decimals), (cond, system, m)
            assert got_half == pytest.approx(half, abs=0.51 * 10**-decimals), (cond, system, m)
            assert int(n) >= count
            checked += 1
    return checked


@pytest.mark.slow
def test_csv_markdown_html_and_json_agree(report_dir):
    want = _expected(report_dir)
    metrics = ["stoi", "si_sdr", "cd", "llr"]
    first_table = (report_dir / "summary.md").read_text().split("\n\n")[0]  # the paired gains follow
    md = [line for line in first_table.splitlines() if line.startswith("| ")]
    md_rows = [[c.strip() for c in line.strip("|").split("|")] for line in md[1:]]
    parser = _Table()
    parser.feed((report_dir / "report.html").read_text())
    html_rows = parser.rows[1:]
    assert len(md_rows) == len(html_rows) == 3 * 3  # (2 conditions + all) x 3 systems
    assert md_rows == html_rows  # same text, cell for cell
    assert _check_rows(md_rows, metrics, want) == 9 * 4
    summary = json.loads((report_dir / "summary.json").read_text())
    for e in summary:
        mean, half, n = want[(e["condition"], e["system"], e["metric"])]
        assert (e["mean"], e["ci"], e["n"]) == (pytest.approx(mean), pytest.approx(half), n)


def test_paired_gains_hand_computed_and_oriented():
    rows = [{"file": f, "condition": c, "system": s, "pesq": p, "cd": d}
            for f, c, s, p, d in [("a", "x", "unprocessed", 1.0, 5.0), ("a", "x", "m", 1.5, 4.0),
                                  ("b", "x", "unprocessed", 2.0, 3.0), ("b", "x", "m", 2.1, 3.5),
                                  ("c", "y", "unprocessed", 1.0, 4.0), ("c", "y", "m", math.nan, 2.0)]]
    gains = {(e["condition"], e["metric"]): e for e in paired_gains(rows, ("pesq", "cd"), ("unprocessed", "m"),
                                                                       "unprocessed")}
    assert gains[("x", "pesq")]["mean"] == pytest.approx(0.3) and gains[("x", "pesq")]["n"] == 2
    assert gains[("x", "cd")]["mean"] == pytest.approx((1.0 - 0.5) / 2)  # lower CD is better: +1, -0.5
    assert gains[("all", "pesq")]["n"] == 2 and gains[("all", "cd")]["n"] == 3  # the NaN file left out
    assert gains[("y", "cd")]["mean"] == pytest.approx(2.0) and math.isnan(gains[("y", "cd")]["ci"])
    assert paired_gains(rows, ("pesq",), ("unprocessed", "m"), "wpe") == []  # no such baseline
    table = gains_markdown(list(gains.values()), ("pesq", "cd"), "unprocessed")
    assert "| x | m | 2 | +0.30 ± " in table and "better on" in table


def _report(folder: Path, model: str, pesq: list[float], cd: list[float], extra_file: bool = False) -> Path:
    folder.mkdir()
    rows = [{"file": f"c{i % 2}/f{i}", "condition": f"c{i % 2}", "system": s, "pesq": p + (s == "wpe"), "cd": d}
            for i, (p, d) in enumerate(zip(pesq, cd)) for s in ("unprocessed", "wpe", model)]
    if extra_file:
        rows.append({"file": "c0/only_here", "condition": "c0", "system": model, "pesq": 9.0, "cd": 0.0})
    write_csv(folder / "per_file.csv", rows, ("pesq", "cd"))
    return folder


def test_compare_pairs_two_reports_by_file(tmp_path, capsys):
    new = _report(tmp_path / "new", "model:ft", [2.1, 2.3, 2.0, 2.6], [3.0, 2.0, 2.5, 1.0], extra_file=True)
    old = _report(tmp_path / "old", "model:v9", [2.0, 2.0, 2.0, 2.0], [3.5, 2.5, 2.0, 2.0])
    table = compare_reports(new, old, metrics=("pesq", "cd"))
    # c0: files 0, 2 -> PESQ +0.1, +0.0; CD (lower is better) +0.5, -0.5; c1: +0.3, +0.6 and +0.5, +1.0
    t = stats.t.ppf(0.975, 1)
    assert f"| c0 | model:ft (new) | 2 | +0.050 ± {t * 0.05:.3f} | 0.000 ± {t * 0.5:.3f} | 0 of 2 |" in table
    assert "| c1 | model:ft (new) | 2 | +0.450 ± " in table and "| all | model:ft (new) | 4 | +0.250 ± " in table
    assert "4 files in both (1 only in" in table
    wpe = compare_reports(new, old, "wpe", "wpe", ("pesq",))  # any system against any
    assert "| c1 | wpe (new) | 2 | +0.450 ± " in wpe
    with pytest.raises(DereverbError, match="no system 'dnn'"):
        compare_reports(new, old, "dnn")
    with pytest.raises(DereverbError, match="not a dereverb evaluate folder"):
        compare_reports(new, tmp_path)
    with pytest.raises(DereverbError, match="share no scored metric"):
        compare_reports(new, old, metrics=("estoi",))
    (tmp_path / "again").mkdir()
    twin = _report(tmp_path / "again" / "new", "model:ft", [2.0] * 4, [3.0] * 4)  # same name, same system
    assert f"model:ft ({twin})" in compare_reports(new, twin)
    assert main(["compare", str(new), str(old), "-o", str(tmp_path / "cmp.md")]) == 0
    assert capsys.readouterr().out == (tmp_path / "cmp.md").read_text() == compare_reports(new, old)
    assert main(["compare", str(new), str(tmp_path / "missing")]) == 2
    assert "not a dereverb evaluate folder" in capsys.readouterr().err
    bundled = _report(tmp_path / "bundled", "model", [2.0] * 4, [3.0] * 4)  # evaluate --model default
    assert "| all | model:ft (new) | 4 | +0.250 ± " in compare_reports(new, bundled, metrics=("pesq",))


@pytest.mark.slow
def test_summary_holds_the_paired_gains(report_dir):
    with open(report_dir / "per_file.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    base = {r["file"]: r for r in rows if r["system"] == "unprocessed"}
    copy = [r for r in rows if r["system"] == "copy"]
    cd_gain = np.mean([float(base[r["file"]]["cd"]) - float(r["cd"]) for r in copy])  # lower is better
    text = (report_dir / "summary.md").read_text()
    assert "### Paired gain over unprocessed" in text and "Paired gain over wpe" not in text
    line = next(x for x in text.splitlines() if x.startswith("| all | copy |") and x.endswith("of 4 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert float(cells[5].split("±")[0]) == pytest.approx(cd_gain, abs=0.006)  # the copy of the input: 0


CHECK = """<script>
function check(){const i=[...document.images],a=[...document.querySelectorAll('audio')];
const rows=[...document.querySelectorAll('.row')];
return {imgs:i.length,imgOk:i.filter(x=>x.complete&&x.naturalWidth>0).length,
auds:a.length,audOk:a.filter(x=>x.readyState>=1&&x.duration>0).length,
wrapped:rows.filter(r=>new Set([...r.querySelectorAll('figure')].map(f=>f.offsetTop)).size>1).length};}
window.addEventListener('load',()=>{let n=0;const t=setInterval(()=>{const c=check();
if((c.imgOk===c.imgs&&c.audOk===c.auds)||++n>100){clearInterval(t);
document.body.setAttribute('data-check',JSON.stringify(c));}},50);});
</script>"""


def _browser_check(page: Path, tmp: Path) -> dict:
    """Open ``page`` in headless Chromium and return the check script's counts."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp}", "--window-size=1024,768",
           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    start = dom.index('data-check="') + len('data-check="')
    return json.loads(dom[start : dom.index('"', start)].replace("&quot;", '"'))


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_loads_offline_in_headless_chromium(report_dir, tmp_path):
    html = (report_dir / "report.html").read_text()
    assert "http://" not in html and "https://" not in html  # nothing fetched from the network
    page = report_dir / "check.html"  # beside report.html so relative asset paths resolve
    page.write_text(html.replace("</body>", CHECK + "</body>"))
    got = _browser_check(page, tmp_path / "profile")
    # 4 charts + 2 examples x (reverb, copy, oracle, clean) spectrograms; 8 players; each example on one row
    assert got == {"imgs": 12, "imgOk": 12, "auds": 8, "audOk": 8, "wrapped": 0}
    # the check can fail: remove one spectrogram and one audio file
    example = sorted((report_dir / "assets").iterdir())[0]
    (example / "clean.png").unlink()
    (example / "clean.wav").unlink()
    got = _browser_check(page, tmp_path / "profile2")
    assert got == {"imgs": 12, "imgOk": 11, "auds": 8, "audOk": 7, "wrapped": 0}


def test_html_holds_the_paired_gains_hides_empty_notes_and_keeps_panels_on_one_row(tmp_path):
    """report.html had summary.md's table but not its paired gains, an empty "0 note(s)" section,
    and example panels that wrapped (the clean one alone on a second row)."""
    from types import SimpleNamespace

    from dereverb.report import html_report, summarise

    rows = [{"file": f"c{i % 2}/f{i}", "condition": f"c{i % 2}", "system": s, "pesq": 1.0 + i / 10 + (s == "m"),
             "cd": 4.0 - i / 5 - (s == "m") * i / 10} for i in range(6) for s in ("unprocessed", "m")]
    result = SimpleNamespace(rows=rows, metrics=("pesq", "cd"), systems=("unprocessed", "m"), notes=[],
                             out_dir=tmp_path)
    page = html_report(summarise(rows, result.metrics, result.systems), result, [])
    markdown = gains_markdown(paired_gains(rows, result.metrics, result.systems, "unprocessed"), result.metrics,
                              "unprocessed")
    want = [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines() if line.startswith("| ")]
    parser = _Table("gains-unprocessed")
    parser.feed(page)
    assert parser.rows == want and len(want) == 1 + 3  # header, c0, c1, all: cell for cell as in summary.md
    assert "Paired gain over unprocessed (positive = better)" in page and "gains-wpe" not in page
    assert "note(s)" not in page and "<h2>Notes</h2>" not in page
    result.notes = ["c0/f0.wav: 44100 Hz, resampled to 16000 Hz"]
    assert "<summary>1 note(s)</summary>" in html_report(summarise(rows, result.metrics, result.systems), result, [])
    style = page[page.index("<style>") : page.index("</style>")]
    assert "flex-wrap:nowrap" in style and "figure{margin:0;flex:1 1 0;min-width:0" in style
    assert "figure img{display:block;width:100%" in style
