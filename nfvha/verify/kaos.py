"""Renders the requirement model as a KAOS diagram with Graphviz (dot).

KAOS shapes: goals are parallelograms, requirements bold parallelograms
(coloured by their latest verdict), agents hexagons, obstacles red
parallelograms leaning the other way (as KAOS tools draw them).
"""
from __future__ import annotations

import shutil
import subprocess
from typing import Dict, Optional

from .model import Model

COLOURS = {"pass": "#b7e1b0", "fail": "#f4b4b4", None: "#ffffff"}


def _q(s: str) -> str:
    # Labels carry dot's own "\\n" line breaks: escape quotes only.
    return '"' + s.replace('"', '\\"') + '"'


def _wrap(text: str, width: int = 28) -> str:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    lines.append(cur)
    return "\\n".join(lines)


def to_dot(m: Model, verdicts: Optional[Dict[str, str]] = None) -> str:
    verdicts = verdicts or {}
    out = ["digraph KAOS {", "  rankdir=BT; nodesep=0.25; ranksep=0.45;",
           '  node [fontname="Helvetica" fontsize=10 style=filled fillcolor="#ffffff"];',
           '  edge [fontname="Helvetica" fontsize=8 arrowsize=0.6];']
    for g in m.goals.values():
        out.append(f"  {_q(g.id)} [shape=parallelogram fillcolor=\"#dde8f7\" "
                   f"label={_q(g.id + chr(92) + 'n' + _wrap(g.text))}];")
        if g.refines:
            out.append(f"  {_q(g.id)} -> {_q(g.refines)} [label=\"refines\"];")
    for o in m.obstacles.values():
        out.append(f"  {_q(o.id)} [shape=parallelogram skew=-0.4 color=red fontcolor=\"#900\" "
                   f"fillcolor=\"#fde0e0\" label={_q(o.id + chr(92) + 'n' + _wrap(o.text))}];")
        for gid in o.obstructs:
            out.append(f"  {_q(o.id)} -> {_q(gid)} [color=red label=\"obstructs\"];")
        for gid in o.resolved_by:
            out.append(f"  {_q(gid)} -> {_q(o.id)} [style=dashed label=\"resolves\"];")
    for a in m.agents.values():
        label = a.text + ("\\n(" + ", ".join(a.examples) + ")" if a.examples else "")
        out.append(f"  {_q('agent:' + a.id)} [shape=hexagon fillcolor=\"#fff4cc\" "
                   f"label={_q(label)}];")
    for r in m.requirements.values():
        v = verdicts.get(r.id)
        v = v if v in ("pass", "fail") else None      # anything else: not verified
        tag = f"\\n[{v.upper()}]" if v else ""
        out.append(f"  {_q(r.id)} [shape=parallelogram penwidth=3 fillcolor=\"{COLOURS[v]}\" "
                   f"label={_q(r.id + chr(92) + 'n' + _wrap(r.text) + tag)} "
                   f"tooltip={_q(r.metric)}];")
        out.append(f"  {_q(r.id)} -> {_q(r.goal)};")
        out.append(f"  {_q('agent:' + r.agent)} -> {_q(r.id)} [dir=none style=dotted "
                   f"label=\"responsible\"];")
    out.append("}")
    return "\n".join(out) + "\n"


def render(dot_text: str, fmt: str = "svg") -> bytes:
    if fmt == "dot":
        return dot_text.encode()
    if fmt not in ("svg", "png"):
        raise ValueError(f"unknown format {fmt!r}: svg, png or dot")
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError("Graphviz 'dot' is not installed (Debian package graphviz)")
    p = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True,
                       timeout=60, check=False)
    if p.returncode != 0:
        raise RuntimeError("dot failed: " + p.stderr.decode(errors="replace")[:500])
    return p.stdout
