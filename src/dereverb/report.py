"""Summaries of an evaluation: the per-file CSV, means with 95% confidence intervals, markdown,
JSON and HTML.  :mod:`dereverb.evaluate` scores the files and calls this module; it never calls
back.

The interval is Student's t: ``mean +- t_{0.975, n-1} s / sqrt(n)`` over the files of one
condition x system where the metric is defined (NaN values are left out and ``n`` counts the
rest).  Every number shown (markdown, HTML) goes through :func:`fmt`, so the three outputs agree
with each other and with ``per_file.csv``.

``report.html`` works offline: bar charts are embedded PNG data URIs; spectrograms (PNG) and
audio (WAV) of the example files sit beside it in ``assets/``; no script or style is fetched.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from . import audio

DECIMALS = {"stoi": 3, "estoi": 3, "llr": 3}
LABELS = {"pesq": "PESQ", "stoi": "STOI", "estoi": "ESTOI", "si_sdr": "SI-SDR (dB)",
          "cd": "CD (dB)", "llr": "LLR", "fwsegsnr": "FWSegSNR (dB)", "srmr": "SRMR",
          "dnsmos_ovrl": "DNSMOS OVRL", "dnsmos_sig": "DNSMOS SIG", "dnsmos_bak": "DNSMOS BAK",
          "t60_est": "T60 est. (s)", "drr_est": "DRR est. (dB)"}
ALL = "all"
LOWER_IS_BETTER = frozenset({"cd", "llr", "t60_est"})
GAIN_BASELINES = ("unprocessed", "wpe")  # the paired gains shown in summary.md and report.html


def confidence_interval(values, level: float = 0.95) -> tuple[float, float, int]:
    """``(mean, half_width, n)`` over the finite ``values``; half width NaN when ``n < 2``."""
    from scipy import stats

    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, 0
    mean = float(v.mean())
    if v.size < 2 or not np.isfinite(v).all():
        return mean, math.nan, int(v.size)
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, half, int(v.size)


def conditions_of(rows: list[dict]) -> list[str]:
    """Conditions in sorted order, plus ``all`` when there are several."""
    conds = sorted({r["condition"] for r in rows})
    return conds + [ALL] if len(conds) > 1 else conds


def summarise(rows: list[dict], metrics: tuple[str, ...], systems: tuple[str, ...]) -> list[dict]:
    """``[{condition, system, metric, mean, ci, n}]`` for every condition x system x metric."""
    out = []
    for cond in conditions_of(rows):
        for system in systems:
            sel = [r for r in rows if r["system"] == system and cond in (ALL, r["condition"])]
            if not sel:
                continue
            for m in metrics:
                mean, ci, n = confidence_interval([r.get(m, math.nan) for r in sel])
                out.append({"condition": cond, "system": system, "metric": m, "mean": mean, "ci": ci, "n": n})
    return out


def paired_gains(rows: list[dict], metrics: tuple[str, ...], systems: tuple[str, ...],
                 baseline: str) -> list[dict]:
    """``[{condition, system, metric, mean, ci, n}]`` of per-file differences against ``baseline``.

    Each system's value on a file minus the baseline's on the same file, oriented so that positive
    is better (baseline minus system for lower-is-better metrics); mean and 95% interval of those
    differences, per condition and over all.  Pairing removes the spread between files, so a gain
    can be certain while the two systems' own intervals overlap.  Empty if ``baseline`` is absent.
    """
    base = {r["file"]: r for r in rows if r["system"] == baseline}
    out = []
    for cond in conditions_of(rows) if base else []:
        for system in systems:
            if system == baseline:
                continue
            sel = [r for r in rows if r["system"] == system and r["file"] in base and cond in (ALL, r["condition"])]
            if not sel:
                continue
            for m in metrics:
                sign = -1.0 if m in LOWER_IS_BETTER else 1.0
                diffs = [sign * (r.get(m, math.nan) - base[r["file"]].get(m, math.nan)) for r in sel]
                mean, ci, n = confidence_interval(diffs)
                out.append({"condition": cond, "system": system, "metric": m, "mean": mean, "ci": ci, "n": n})
    return out


def compare_reports(new: str | Path, old: str | Path, new_system: str | None = None,
                    old_system: str | None = None, metrics: tuple[str, ...] = ()) -> str:
    """Markdown: one system of evaluation folder ``new`` against one of ``old``, paired per file.

    Both folders are ``dereverb evaluate`` outputs (their ``per_file.csv``) scored on the same test
    set; files are matched by name and the table is :func:`gains_markdown` of ``new``'s system over
    ``old``'s (positive = ``new`` better), per condition of ``new`` and over all.  A system left
    as None is the folder's only model row (``model`` for the bundled one, else ``model:NAME``).
    Raises ``DereverbError`` when a system is missing or ambiguous, or the folders share no file
    or metric.
    """
    from .errors import DereverbError

    tables = []
    for folder, system in ((new, new_system), (old, old_system)):
        path = Path(folder) / "per_file.csv"
        if not path.is_file():
            raise DereverbError(f"{folder}: not a dereverb evaluate folder (no per_file.csv)")
        rows, names = read_csv(path)
        systems = list(dict.fromkeys(r["system"] for r in rows))
        if system is None:
            models = [x for x in systems if x == "model" or x.startswith("model:")]
            if len(models) != 1:
                raise DereverbError(f"{folder}: name the system to compare (one of {', '.join(systems)})")
            system = models[0]
        if system not in systems:
            raise DereverbError(f"{folder}: no system {system!r} (it has {', '.join(systems)})")
        tables.append(({r["file"]: r for r in rows if r["system"] == system}, names, system))
    (a, names_a, sys_a), (b, names_b, sys_b) = tables
    label_a, label_b = f"{sys_a} ({Path(new).name})", f"{sys_b} ({Path(old).name})"
    if label_a == label_b:  # e.g. runs/a/sim against runs/b/sim
        label_a, label_b = f"{sys_a} ({new})", f"{sys_b} ({old})"
    chosen = tuple(m for m in (metrics or names_a) if m in names_a and m in names_b)
    common = [f for f in a if f in b]
    if not chosen or not common:
        raise DereverbError(f"{new} and {old} share no " + ("scored metric" if not chosen else "file"))
    rows = [{**a[f], "system": label_a} for f in common] + [{**b[f], "system": label_b} for f in common]
    note = f"{len(common)} files in both"
    if len(common) < max(len(a), len(b)):
        note += f" ({len(a) - len(common)} only in {new}, {len(b) - len(common)} only in {old})"
    table = gains_markdown(paired_gains(rows, chosen, (label_a,), label_b), chosen, label_b, extra_digits=1)
    return table + f"\n{note}.\n"


def gains_markdown(gains: list[dict], metrics: tuple[str, ...], baseline: str, extra_digits: int = 0) -> str:
    """Paired gains as a markdown table with a column counting the metrics certainly better
    (``extra_digits`` more decimals than the other tables, for differences between close systems)."""
    if not gains:
        return ""
    lines = [f"### Paired gain over {baseline} (positive = better)", "",
             "| condition | system | n | " + " | ".join(LABELS.get(m, m) for m in metrics) + " | better on |",
             "|---|---|---|" + "---|" * (len(metrics) + 1)]
    lines += ["| " + " | ".join(row) + " |" for row in _gain_rows(gains, metrics, extra_digits)]
    return "\n".join(lines) + f"\n\n{_gains_note(baseline)}\n"


def _gain_rows(gains: list[dict], metrics: tuple[str, ...], extra_digits: int = 0) -> list[list[str]]:
    """Cells of each paired-gain row: condition, system, n, a signed ``mean ± ci`` per metric, and
    how many metrics are certainly better (interval above zero)."""
    index = {(e["condition"], e["system"], e["metric"]): e for e in gains}
    rows = []
    for cond, system in dict.fromkeys((e["condition"], e["system"]) for e in gains):
        entries = [index[(cond, system, m)] for m in metrics]
        sure = sum(e["mean"] - e["ci"] > 0 for e in entries if not math.isnan(e["ci"]))
        cells = [("+" if e["mean"] > 0 else "") + cell(e, extra_digits) for e in entries]
        rows.append([cond, system, str(max(e["n"] for e in entries)), *cells, f"{sure} of {len(metrics)}"])
    return rows


def _gains_note(baseline: str) -> str:
    return ("Per-file differences against the same file's " + baseline + " score, mean ± 95% interval; "
            "\"better on\" counts metrics whose whole interval is above zero.")


def fmt(metric: str, value: float, extra_digits: int = 0) -> str:
    """A metric value as shown in every table."""
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{DECIMALS.get(metric, 2) + extra_digits}f}"


def cell(entry: dict, extra_digits: int = 0) -> str:
    """``mean ± ci`` (or just the mean when the interval is undefined)."""
    text = fmt(entry["metric"], entry["mean"], extra_digits)
    return text if math.isnan(entry["ci"]) else f"{text} ± {fmt(entry['metric'], entry['ci'], extra_digits)}"


def header(metric: str) -> str:
    return f"{LABELS.get(metric, metric)} {'↓' if metric in LOWER_IS_BETTER else '↑'}"


def _table_rows(summary: list[dict], metrics: tuple[str, ...]) -> list[tuple[str, str, int, list[str]]]:
    """``(condition, system, files, cells)`` per table row; ``files`` = the largest metric ``n``."""
    index = {(e["condition"], e["system"], e["metric"]): e for e in summary}
    keys = list(dict.fromkeys((e["condition"], e["system"]) for e in summary))
    return [(c, s, max(index[(c, s, m)]["n"] for m in metrics), [cell(index[(c, s, m)]) for m in metrics])
            for c, s in keys]


def markdown(summary: list[dict], metrics: tuple[str, ...]) -> str:
    """The summary as one markdown table: a row per condition x system, a column per metric."""
    lines = ["| condition | system | n | " + " | ".join(header(m) for m in metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for cond, system, n, cells in _table_rows(summary, metrics):
        lines.append(f"| {cond} | {system} | {n} | " + " | ".join(cells) + " |")
    note = "Mean ± 95% confidence interval (Student's t) over files; n = files with a defined value."
    return "\n".join(lines) + f"\n\n{note}\n"


# --- figures -------------------------------------------------------------------------------------


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def bar_chart(summary: list[dict], metric: str, systems: tuple[str, ...]) -> bytes:
    """PNG bytes: one group of bars per condition, one bar per system, 95% CI error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = list(dict.fromkeys(e["condition"] for e in summary))
    index = {(e["condition"], e["system"]): e for e in summary if e["metric"] == metric}
    width = 0.8 / max(1, len(systems))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(conds) * max(1, len(systems)) / 2), 2.8))
    for i, s in enumerate(systems):
        means = [index.get((c, s), {}).get("mean", math.nan) for c in conds]
        cis = [index.get((c, s), {}).get("ci", math.nan) for c in conds]
        means = [m if math.isfinite(m) else math.nan for m in means]
        ax.bar(np.arange(len(conds)) + (i - (len(systems) - 1) / 2) * width, means, width,
               yerr=np.nan_to_num(cis), capsize=2, label=s)
    ax.set_xticks(np.arange(len(conds)), conds, rotation=20, ha="right", fontsize=8)
    ax.set_title(header(metric), fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    data = _png(fig)
    plt.close(fig)
    return data


def stft_db(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(f Hz, t s, dB (F, T))`` of ``x (S,)`` with 32 ms Hann frames every 8 ms."""
    from scipy import signal

    f, t, z = signal.stft(x, rate, nperseg=int(0.032 * rate), noverlap=int(0.024 * rate))
    return f, t, 20 * np.log10(np.abs(z) + 1e-10)


def spectrogram_png(x: np.ndarray, rate: int, title: str, vmax: float) -> bytes:
    """PNG bytes of the dB spectrogram of ``x (S,)``, colour range ``vmax - 80 .. vmax`` dB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, t, db = stft_db(x, rate)
    fig, ax = plt.subplots(figsize=(3.4, 2.2))
    ax.pcolormesh(t, f / 1000, db, vmin=vmax - 80, vmax=vmax, shading="auto", cmap="magma")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("s", fontsize=7)
    ax.set_ylabel("kHz", fontsize=7)
    ax.tick_params(labelsize=7)
    data = _png(fig)
    plt.close(fig)
    return data


# --- writing -------------------------------------------------------------------------------------


def _write_bytes(path: Path, data: bytes) -> None:
    with audio.atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _write_text(path: Path, text: str) -> None:
    _write_bytes(path, text.encode("utf-8"))


def write_all(result, examples: list[str]) -> None:
    """``summary.md``, ``summary.json``, ``notes.txt`` and ``report.html`` for an evaluation."""
    summary = summarise(result.rows, result.metrics, result.systems)
    out = Path(result.out_dir)
    gains = [gains_markdown(paired_gains(result.rows, result.metrics, result.systems, b), result.metrics, b)
             for b in GAIN_BASELINES]
    _write_text(out / "summary.md", "\n".join([markdown(summary, result.metrics), *filter(None, gains)]))
    _write_text(out / "summary.json", json.dumps(summary, indent=1, allow_nan=True))
    _write_text(out / "notes.txt", "".join(n + "\n" for n in result.notes))
    _write_text(out / "report.html", html_report(summary, result, examples))


def _example_html(out: Path, key: str, systems: tuple[str, ...]) -> str:
    folder = out / "assets" / safe_name(key)
    order = ["reverb"] + [safe_name(s) for s in systems if s != "unprocessed"] + ["clean"]
    files = [(name, folder / f"{name}.wav") for name in order if (folder / f"{name}.wav").is_file()]
    if not files:
        return ""
    signals = {name: audio.read(p)[0][0] for name, p in files}
    rate = audio.info(files[0][1]).sample_rate
    vmax = float(stft_db(signals.get("reverb", next(iter(signals.values()))), rate)[2].max())
    cells = []
    for name, path in files:
        png = folder / f"{name}.png"
        _write_bytes(png, spectrogram_png(signals[name], rate, name, vmax))
        rel = png.relative_to(out).as_posix()
        cells.append(f'<figure><img src="{html.escape(rel)}" alt="spectrogram {html.escape(name)}">'
                     f'<audio controls preload="metadata" src="{html.escape(path.relative_to(out).as_posix())}">'
                     f"</audio><figcaption>{html.escape(name)}</figcaption></figure>")
    return f"<h3>{html.escape(key)}</h3><div class=row>{''.join(cells)}</div>"


# An example's panels (reverberant, each system, clean) share one row and shrink to fit it.
STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}
.row{display:flex;flex-wrap:nowrap;gap:8px}figure{margin:0;flex:1 1 0;min-width:0;max-width:320px}
figure img{display:block;width:100%;height:auto}audio{width:100%}.charts img{margin:4px}"""


def gains_html(gains: list[dict], metrics: tuple[str, ...], baseline: str) -> str:
    """The paired gains of :func:`gains_markdown` as an HTML table, the same text cell for cell."""
    if not gains:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in
                   ["condition", "system", "n", *(LABELS.get(m, m) for m in metrics), "better on"])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in _gain_rows(gains, metrics))
    return (f"<h3>Paired gain over {html.escape(baseline)} (positive = better)</h3>"
            f"<table id=\"gains-{html.escape(safe_name(baseline))}\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table><p>{html.escape(_gains_note(baseline))}</p>")


def html_report(summary: list[dict], result, examples: list[str]) -> str:
    """The whole ``report.html`` (charts embedded, example assets referenced beside it)."""
    out = Path(result.out_dir)
    head = "".join(f"<th>{html.escape(header(m))}</th>" for m in result.metrics)
    body = "".join(f"<tr><td>{html.escape(c)}</td><td>{html.escape(s)}</td><td>{n}</td>"
                   + "".join(f"<td>{html.escape(v)}</td>" for v in cells) + "</tr>"
                   for c, s, n, cells in _table_rows(summary, result.metrics))
    charts = "".join(
        f'<img alt="{html.escape(header(m))}" src="data:image/png;base64,'
        f'{base64.b64encode(bar_chart(summary, m, result.systems)).decode()}">' for m in result.metrics)
    gains = "".join(gains_html(paired_gains(result.rows, result.metrics, result.systems, b), result.metrics, b)
                    for b in GAIN_BASELINES)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    if notes:
        notes = f"<h2>Notes</h2><details><summary>{len(result.notes)} note(s)</summary><ul>{notes}</ul></details>"
    examples_html = "".join(_example_html(out, k, result.systems) for k in examples)
    n_files = len({r["file"] for r in result.rows})
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>dereverb evaluation</title>"
            f"<style>{STYLE}</style></head><body><h1>dereverb evaluation</h1>"
            f"<p>{n_files} file(s); systems: {html.escape(', '.join(result.systems))}. "
            f"Mean ± 95% confidence interval (Student's t) over files.</p>"
            f"<h2>Summary</h2><table id=summary><thead><tr><th>condition</th><th>system</th><th>n</th>{head}</tr>"
            f"</thead><tbody>{body}</tbody></table>{gains}"
            f"<h2>Charts</h2><div class=charts>{charts}</div>"
            f"<h2>Examples</h2>{examples_html or '<p>none</p>'}{notes}"
            f"</body></html>\n")


def safe_name(label: str) -> str:
    """``label`` as a file name: characters other than letters, digits and ``-_.`` become ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def write_csv(path: Path, rows: list[dict], names: tuple[str, ...]) -> None:
    """One row per file x system; NaN written as an empty cell; full float precision."""
    with audio.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "condition", "system", *names])
        for r in rows:
            w.writerow([r["file"], r["condition"], r["system"],
                        *("" if math.isnan(v := r.get(n, math.nan)) else repr(float(v)) for n in names)])


def read_csv(path: str | Path) -> tuple[list[dict], tuple[str, ...]]:
    """Inverse of :func:`write_csv`: rows with float metrics (empty cells are NaN)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        names = tuple(c for c in reader.fieldnames or () if c not in ("file", "condition", "system"))
        rows = [{**{k: r[k] for k in ("file", "condition", "system")},
                 **{n: float(r[n]) if r[n] else math.nan for n in names}} for r in reader]
    return rows, names
