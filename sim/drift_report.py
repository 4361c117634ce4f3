"""Drift review reports: terminal rows, Markdown and self-contained HTML with plots.

Split from :mod:`perpsim.sim.drift` so the comparison stays free of plotting.
Plots use matplotlib's Agg backend, imported only when a report is drawn, and are
embedded as base64 PNGs so one file is the whole report: equity overlay (with
B - A below), position overlays per symbol, and fill prices of paired fills.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from perpsim.core.errors import InputError
from perpsim.sim.drift import (
    DriftReport,
    RunData,
    checklist_note,
    equity_paths,
    failure_line,
    fill_pairs,
    fmt_value,
    position_paths,
    quantile,
)

__all__ = [
    "divergence_lines",
    "plots",
    "render_html",
    "render_markdown",
    "summary_rows",
    "write_report",
]


def summary_rows(rep: DriftReport) -> list[tuple[str, str, str, str]]:
    """(metric, A, B, difference) rows shared by the terminal, HTML and Markdown outputs."""
    rows: list[tuple[str, str, str, str]] = [
        (
            "events",
            fmt_value(rep.run_a["events"]),
            fmt_value(rep.run_b["events"]),
            fmt_value(rep.run_b["events"] - rep.run_a["events"]),
        ),
        (
            "digest",
            str(rep.run_a["digest"])[:16],
            str(rep.run_b["digest"])[:16],
            "same" if rep.identical else "differs",
        ),
    ]
    for k in ("decision", "order", "fill", "reject", "funding", "error"):
        c = rep.counts.get(k)
        if c:
            rows.append((f"{k}s", fmt_value(c["a"]), fmt_value(c["b"]), f"{c['diff']:+d}"))
    rows.append(("decision agreement", "", "", fmt_value(rep.decision_agreement)))
    fd = rep.fill_drift_bps
    rows.append(
        (
            "fill price drift bps p50/p95/max",
            f"{fd['matched']} paired",
            f"{fd['unmatched']} unpaired",
            f"{fmt_value(fd['p50'])} / {fmt_value(fd['p95'])} / {fmt_value(fd['max'])}",
        )
    )
    for k in ("pnl", "realized", "fees", "funding", "final_equity"):
        m = rep.money[k]
        rows.append((k.replace("_", " "), fmt_value(m["a"]), fmt_value(m["b"]), fmt_value(m["diff"])))
    rows.append(("equity path max abs diff", "", "", fmt_value(rep.equity_max_abs_diff)))
    for sym, p in rep.positions.items():
        rows.append(
            (
                f"position {sym} max abs diff",
                "",
                f"{p['cycles_differing']}/{p['cycles']} cycles",
                fmt_value(p["max_abs_diff"]),
            )
        )
    t = rep.timing_ms
    rows.append(
        (
            "timing drift ms p50/p95/max",
            f"{t['n']} paired",
            "",
            f"{fmt_value(t['p50'])} / {fmt_value(t['p95'])} / {fmt_value(t['max'])}",
        )
    )
    return rows


def divergence_lines(rep: DriftReport) -> list[str]:
    """The first divergence in a few lines of text (or that there is none)."""
    fd = rep.first_divergence
    if fd is None:
        return [f"no divergence: all {rep.run_a['events']} events identical"]
    lines = [
        f"first divergence at event {fd['index']} (after {fd['after_identical']} identical), "
        f"fields: {', '.join(fd['fields'])}",
        f"  A: {fd['time_a'] or '-'} {fd['kind_a'] or '(no event)'}  {_event_text(fd['a'])}",
        f"  B: {fd['time_b'] or '-'} {fd['kind_b'] or '(no event)'}  {_event_text(fd['b'])}",
    ]
    return lines


def _event_text(ev: dict[str, Any] | None) -> str:
    if ev is None:
        return ""
    skip = {"ts", "recv_ts", "kind"}
    return " ".join(f"{k}={fmt_value(v)}" for k, v in ev.items() if k not in skip)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(rep: DriftReport, a: RunData, b: RunData) -> dict[str, str]:
    """Base64 PNGs: equity overlay, position overlays, fill price scatter (matplotlib Agg).

    Matplotlib is imported here, not at module import, and always with the Agg
    backend: a report is written on servers without a display.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    eq = equity_paths(a, b).with_columns((pl.col("ts") / 3.6e12).alias("h"))
    t0 = eq["h"].min() if eq.height else 0.0
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 4.8), sharex=True, height_ratios=[3, 1])
    h = eq["h"] - t0  # type: ignore[operator, unused-ignore]
    ax.plot(h, eq["equity_a"], label=f"A {a.run_id}", lw=1.2)
    ax.plot(h, eq["equity_b"], label=f"B {b.run_id}", lw=1.0, ls="--")
    ax.set_ylabel("equity")
    ax.legend(loc="best", fontsize=8)
    ax.set_title("equity overlay")
    ax2.plot(h, eq["diff"], color="tab:red", lw=1.0)
    ax2.set_ylabel("B - A")
    ax2.set_xlabel("hours since start")
    out["equity"] = _png(fig)

    pos = position_paths(a, b)
    syms = pos["symbol"].unique().sort().to_list()
    if syms:
        fig, axes = plt.subplots(len(syms), 1, figsize=(9, 2.2 * len(syms)), sharex=True, squeeze=False)
        for axp, sym in zip(axes[:, 0], syms):
            p = pos.filter(pl.col("symbol") == sym)
            hp = p["ts"] / 3.6e12 - t0
            axp.step(hp, p["qty_a"], where="post", label="A", lw=1.2)
            axp.step(hp, p["qty_b"], where="post", label="B", lw=1.0, ls="--")
            axp.set_ylabel(sym, fontsize=8)
            axp.legend(loc="best", fontsize=7)
        axes[0, 0].set_title("position overlay")
        axes[-1, 0].set_xlabel("hours since start")
        out["positions"] = _png(fig)

    fp = fill_pairs(a, b)
    fsyms = fp["symbol"].unique().sort().to_list() if fp.height else []
    ncol = max(1, min(len(fsyms), 3))
    nrow = max(1, -(-len(fsyms) // ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 4.0 * nrow), squeeze=False, layout="constrained")
    for k, axf in enumerate(axes.flat):
        if k >= len(fsyms):
            if fsyms:
                axf.set_visible(False)
            else:
                axf.text(0.5, 0.5, "no paired fills", ha="center", va="center", transform=axf.transAxes)
            continue
        f = fp.filter(pl.col("symbol") == fsyms[k])
        axf.scatter(f["price_a"], f["price_b"], s=14, c=f["drift_bps"].abs(), cmap="viridis")
        lo = float(min(f["price_a"].min(), f["price_b"].min()))  # type: ignore[type-var, arg-type, unused-ignore]
        hi = float(max(f["price_a"].max(), f["price_b"].max()))  # type: ignore[type-var, arg-type, unused-ignore]
        axf.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls=":")
        axf.set_title(f"{fsyms[k]}: p95 |drift| {fmt_value(quantile(f['drift_bps'].abs(), 0.95))} bps", fontsize=9)
        axf.set_xlabel("fill price A")
        axf.set_ylabel("fill price B")
    fig.suptitle("fill prices, paired fills (colour: |drift| bps)", fontsize=10)
    out["fills"] = _png(fig)
    return out


def _checklist_rows(rep: DriftReport) -> list[tuple[str, str, str, str]]:
    rows = []
    for v in rep.checklist.values():
        rows.append((v["a"]["what"], fmt_value(v["a"]["value"]), fmt_value(v["b"]["value"]), checklist_note(v)))
    return rows


def _md(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def render_markdown(rep: DriftReport, a: RunData, b: RunData, *, images: bool = True) -> str:
    """A Markdown report; plots are inline ``data:`` PNGs, so the file stands alone."""
    verdict = "PASS" if rep.ok else "FAIL: " + failure_line(rep)
    lines = [
        f"# Drift review: {a.run_id} vs {b.run_id}",
        "",
        f"**{verdict}**",
        "",
        f"- A: `{a.path}` ({rep.run_a['profile']}, perpsim {rep.run_a['perpsim_version']})",
        f"- B: `{b.path}` ({rep.run_b['profile']}, perpsim {rep.run_b['perpsim_version']})",
    ]
    lines += [f"- warning: {w}" for w in rep.warnings]
    lines += ["", "## First divergence", "", "```", *divergence_lines(rep), "```", ""]
    if rep.config_diff:
        lines += ["## Configuration differences", "", "| key | A | B |", "|---|---|---|"]
        lines += [f"| {_md(d['key'])} | {_md(d['a'])} | {_md(d['b'])} |" for d in rep.config_diff]
        lines.append("")
    lines += ["## Summary", "", "| metric | A | B | difference |", "|---|---:|---:|---:|"]
    lines += [f"| {_md(m)} | {_md(x)} | {_md(y)} | {_md(d)} |" for m, x, y, d in summary_rows(rep)]
    lines += ["", "## Thresholds", "", "| check | value | limit | result |", "|---|---:|---:|---|"]
    for c in rep.checks:
        op = "≥" if c["kind"] == "min" else "≤"
        result = "ok" if c["ok"] else "**FAIL**"
        lines.append(f"| {c['name']} | {fmt_value(c['value'])} | {op} {fmt_value(c['limit'])} | {result} |")
    lines += [
        "",
        "## Decisions per symbol",
        "",
        "| symbol | A | B | agreement | first disagreement |",
        "|---|---:|---:|---:|---|",
    ]
    for sym, s in rep.symbols.items():
        fdis = s["first_disagreement"]
        fd_txt = f"{fdis['time']} A={fdis['a']} B={fdis['b']}" if fdis else "-"
        lines.append(
            f"| {sym} | {s['decisions_a']} | {s['decisions_b']} | {fmt_value(s['decision_agreement'])} | {fd_txt} |"
        )
    lines += ["", "## 48-hour checklist", "", "| metric | A | B | note |", "|---|---:|---:|---|"]
    lines += [f"| {_md(m)} | {_md(x)} | {_md(y)} | {_md(n)} |" for m, x, y, n in _checklist_rows(rep)]
    if images:
        pics = plots(rep, a, b)
        lines += ["", "## Plots", ""]
        for name, data in pics.items():
            lines += [f"![{name}](data:image/png;base64,{data})", ""]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
td:first-child,th:first-child{text-align:left}.pass{color:#070}.fail{color:#b00}pre{background:#f6f6f6;padding:.8em}
img{max-width:100%}
"""


def _table(head: list[str], rows: Sequence[Sequence[Any]]) -> str:
    h = "".join(f"<th>{html.escape(x)}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def render_html(rep: DriftReport, a: RunData, b: RunData) -> str:
    """A self-contained HTML report: inline CSS and base64 PNG plots, no external files."""
    verdict = (
        '<p class="pass"><b>PASS</b></p>'
        if rep.ok
        else f'<p class="fail"><b>FAIL</b>: {html.escape(failure_line(rep))}</p>'
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>drift {html.escape(a.run_id)} vs "
        f"{html.escape(b.run_id)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Drift review: {html.escape(a.run_id)} vs {html.escape(b.run_id)}</h1>",
        verdict,
        f"<p>A: <code>{html.escape(str(a.path))}</code> · B: <code>{html.escape(str(b.path))}</code></p>",
    ]
    parts += [f"<p>warning: {html.escape(w)}</p>" for w in rep.warnings]
    parts += ["<h2>First divergence</h2>", f"<pre>{html.escape(chr(10).join(divergence_lines(rep)))}</pre>"]
    if rep.config_diff:
        parts += [
            "<h2>Configuration differences</h2>",
            _table(["key", "A", "B"], [(d["key"], str(d["a"]), str(d["b"])) for d in rep.config_diff]),
        ]
    parts += ["<h2>Summary</h2>", _table(["metric", "A", "B", "difference"], summary_rows(rep))]
    parts += [
        "<h2>Thresholds</h2>",
        _table(
            ["check", "value", "limit", "result"],
            [
                (
                    c["name"],
                    fmt_value(c["value"]),
                    ("≥ " if c["kind"] == "min" else "≤ ") + fmt_value(c["limit"]),
                    "ok" if c["ok"] else "FAIL",
                )
                for c in rep.checks
            ],
        ),
    ]
    pics = plots(rep, a, b)
    parts += ["<h2>Plots</h2>"] + [f'<p><img alt="{n}" src="data:image/png;base64,{d}"></p>' for n, d in pics.items()]
    dec_rows = []
    for sym, s in rep.symbols.items():
        fdis = s["first_disagreement"]
        dec_rows.append(
            (
                sym,
                str(s["decisions_a"]),
                str(s["decisions_b"]),
                fmt_value(s["decision_agreement"]),
                f"{fdis['time']} A={fdis['a']} B={fdis['b']}" if fdis else "-",
            )
        )
    parts += [
        "<h2>Decisions per symbol</h2>",
        _table(["symbol", "A", "B", "agreement", "first disagreement"], dec_rows),
    ]
    parts += ["<h2>48-hour checklist</h2>", _table(["metric", "A", "B", "note"], _checklist_rows(rep))]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(rep: DriftReport, a: RunData, b: RunData, path: str | Path) -> Path:
    """Write an HTML (``.html``/``.htm``) or Markdown (``.md``) report; returns the path.

    Raises:
        InputError: another suffix.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".html", ".htm"):
        text = render_html(rep, a, b)
    elif suffix in (".md", ".markdown"):
        text = render_markdown(rep, a, b)
    else:
        raise InputError(f"--report {p}: the suffix must be .html or .md")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p
