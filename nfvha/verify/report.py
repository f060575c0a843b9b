"""One JSON file and one self-contained HTML page per run.

The page has no external reference at all (no script, no font, no image
URL): per scenario an inline SVG timeline (client requests OK/failed over
time, latency, fault/detection/alarm/recovery marks), the SAL reached, the
requirement table with verdicts and their why; then the KAOS diagram,
inline SVG, coloured by this run's verdicts.
"""
from __future__ import annotations

import html
import json
import os
import re
import time
from typing import Any, Dict, List, Optional, Tuple

from . import kaos
from .model import Model, load
from .runner import latest_verdicts

MARKS = {  # event kind → (colour, label)
    "fault": ("#d00000", "fault"),
    "detected": ("#ff8c00", "detected"),
    "alarm": ("#8a2be2", "alarm"),
    # the backup took over: VIP moved (tc053), new queue leader (tc056)
    "failover": ("#008b8b", "takeover"),
    "fenced": ("#8b4513", "fenced"),       # the failed node shot (tc057)
    "instance_restarted": ("#1e90ff", "restarted"),
    "instance_back": ("#008000", "back"),
}
# what a scenario's main probe counts: lost requests, or (broker,
# message queue) lost messages
LOST_UNIT = {"publish": "messages", "mq": "messages"}


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def timeline_svg(sc: Dict[str, Any], width: int = 900) -> str:
    samples: List[list] = sc.get("samples", [])
    events = [e for e in sc.get("events", []) if e["kind"] in MARKS]
    if not samples:
        return "<p>(no samples)</p>"
    t0 = min(s[0] for s in samples)
    t1 = max(max(s[0] for s in samples), max((e["t_ms"] for e in events), default=t0))
    left, right, lat_h, row_h = 60, 10, 120, 18
    span = max(t1 - t0, 1.0)

    def x(t: float) -> float:
        return left + (width - left - right) * (t - t0) / span

    # Mark labels on the first of up to 5 rows where they do not overlap a neighbour.
    placed = []
    row_end: List[float] = []
    for e in sorted(events, key=lambda e: e["t_ms"]):
        text = f"{MARKS[e['kind']][1]} {e['t_ms']:.0f} ms"
        text_w = 5.6 * len(text)
        tx = min(x(e["t_ms"]) + 2, width - text_w - 2)
        row = next((i for i, end in enumerate(row_end) if tx > end + 4), len(row_end))
        if row >= 5:
            row = 4                        # crowded: share the top row rather than leave the box
        elif row == len(row_end):
            row_end.append(0.0)
        row_end[row] = tx + text_w
        placed.append((e, tx, text, row))
    top = 14 + 10 * len(row_end)           # room for the label rows above the plot

    lat = [s[2] for s in samples if s[1]]
    ymax = max(max(lat, default=1.0) * 1.1, 1.0)

    def y(v: float) -> float:
        return top + lat_h - lat_h * min(v, ymax) / ymax

    height = top + lat_h + 2 * row_h + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica" '
             'font-size="10">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{lat_h}" '
             'fill="#fafafa" stroke="#ccc"/>',
             f'<text x="4" y="{top + 10}">latency</text>',
             f'<text x="4" y="{top + 22}">{ymax:.1f} ms</text>',
             f'<text x="4" y="{top + lat_h}">0 ms</text>']
    pts = " ".join(f"{x(s[0]):.1f},{y(s[2]):.1f}" for s in samples if s[1])
    parts.append(f'<polyline class="latency" fill="none" stroke="#4682b4" stroke-width="1" '
                 f'points="{pts}"/>')
    ok_y, bad_y = top + lat_h + 8, top + lat_h + 8 + row_h
    parts.append(f'<text x="4" y="{ok_y + 10}">OK</text>')
    parts.append(f'<text x="4" y="{bad_y + 10}">failed</text>')
    for s in samples:
        yy, col, cls = (ok_y, "#2e8b57", "ok") if s[1] else (bad_y, "#d00000", "failed")
        parts.append(f'<rect class="req {cls}" x="{x(s[0]):.1f}" y="{yy}" width="1.2" '
                     f'height="{row_h - 4}" fill="{col}"/>')
    for e, tx, text, row in placed:
        col = MARKS[e["kind"]][0]
        xx = x(e["t_ms"])
        parts.append(f'<line class="mark {e["kind"]}" x1="{xx:.1f}" x2="{xx:.1f}" '
                     f'y1="{top - 10 * row}" y2="{bad_y + row_h}" stroke="{col}" '
                     'stroke-dasharray="4,2"/>')
        parts.append(f'<text x="{tx:.1f}" y="{top - 3 - 10 * row}" fill="{col}">'
                     f'{_e(text)}</text>')
    axis_y = bad_y + row_h + 14
    for k in range(6):
        t = t0 + span * k / 5
        # the last tick ends at the plot's right edge (a longer number was cut off)
        anchor = ' text-anchor="end"' if k == 5 else ""
        xx = x(t) if k == 5 else x(t) - 10
        parts.append(f'<text x="{xx:.1f}" y="{axis_y}"{anchor}>{t:.0f}</text>')
    parts.append(f'<text x="{width - 150}" y="{axis_y + 12}">ms since the fault</text>')
    parts.append("</svg>")
    return "".join(parts)


def _svg_inline(svg: bytes) -> str:
    text = svg.decode()
    # Drop the XML prolog and doctype: the page embeds the <svg> element itself.
    return text[text.find("<svg"):]


def _fmt(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.0f} ms"


def render_html(report: Dict[str, Any], model: Optional[Model] = None,
                title: str = "nfvha VIM HA verification") -> str:
    model = model or load()
    sal = report["sal"]
    rows = []
    for sc in report["scenarios"]:
        reqs = "".join(
            f'<tr class="req-row {_e(r["verdict"])}"><td>{_e(r["id"])}</td>'
            f'<td>{_e(model.requirements[r["id"]].text if r["id"] in model.requirements else "")}'
            f'</td><td class="verdict {_e(r["verdict"])}">{_e(r["verdict"].upper())}</td>'
            f'<td>{_e(r["why"])}</td></tr>'
            for r in sc["requirements"])
        reached = sc.get("sal_reached")
        lost_unit = LOST_UNIT.get(str(sc.get("facts", {}).get("main_probe")), "requests")
        meas = sc.get("measurement", {})
        rows.append(f"""
<section class="scenario" id="sc-{_e(sc['name'])}">
<h2>Scenario {_e(sc['name'])}</h2>
<p class="sal-reached">SAL reached by the measured times:
<b>{_e(reached or 'none')}</b> (target {_e(sal)})</p>
<table class="figures"><tr>
<th>detection</th><th>outage (precision)</th><th>recovery</th><th>lost</th>
<th>baseline latency</th><th>degradation</th><th>samples (median / max gap)</th></tr>
<tr><td>{_fmt(sc['detection_ms'])}</td>
<td>{_fmt(sc['outage_ms'])} (+{_fmt(sc['outage_precision_ms'])})</td>
<td>{_fmt(sc['recovery_ms'])}</td><td class="lost">{sc['lost']} {lost_unit}</td>
<td>{_e(meas.get('baseline_ms'))} ms</td><td>{_e(meas.get('degradation_pct'))} %</td>
<td>{_e(meas.get('samples'))} ({_e(meas.get('median_gap_ms'))} / {_e(meas.get('max_gap_ms'))} ms)
</td></tr></table>
{timeline_svg(sc)}
<table class="requirements"><thead><tr><th>requirement</th><th>text</th><th>verdict</th>
<th>why</th></tr></thead><tbody>{reqs}</tbody></table>
</section>""")
    try:
        diagram = _svg_inline(kaos.render(kaos.to_dot(model, latest_verdicts(report)), "svg"))
    except RuntimeError as exc:    # no Graphviz: the rest of the page still stands
        diagram = f"<p>KAOS diagram unavailable: {_e(exc)}</p>"
    sal_rows = "".join(f"<tr><td>{k}</td><td>{_e(v['text'])}</td></tr>"
                       for k, v in model.sal.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>
body {{ font-family: Helvetica, Arial, sans-serif; margin: 20px; color: #222; }}
table {{ border-collapse: collapse; margin: 8px 0; }}
td, th {{ border: 1px solid #ccc; padding: 3px 6px; font-size: 13px; vertical-align: top; }}
th {{ background: #eee; }}
td.verdict.pass {{ background: #b7e1b0; font-weight: bold; }}
td.verdict.fail {{ background: #f4b4b4; font-weight: bold; }}
.sal-reached {{ font-size: 16px; }}
.kaos svg {{ max-width: 100%; height: auto; }}
</style></head><body>
<h1>{_e(title)}</h1>
<p>Target service availability level: <b class="sal">{_e(sal)}</b>.
Generated {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}.</p>
<table class="sal-table"><tr><th>level</th><th>bounds (ETSI NFV-REL 001)</th></tr>
{sal_rows}</table>
{''.join(rows)}
<h2>KAOS requirement model</h2>
<div class="kaos">{diagram}</div>
</body></html>
"""


def write(report: Dict[str, Any], directory: str, model: Optional[Model] = None
          ) -> Tuple[str, str]:
    """Writes run-<stamp>.json and run-<stamp>.html in `directory`; returns both paths."""
    os.makedirs(directory, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = os.path.join(directory, f"run-{stamp}")
    with open(base + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(base + ".html", "w") as f:
        f.write(render_html(report, model))
    return base + ".json", base + ".html"


def visible_text(dom: str) -> str:
    """The page's text as a reader sees it (tags out, whitespace folded)."""
    dom = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom))).strip()
