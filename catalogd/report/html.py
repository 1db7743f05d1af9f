"""One self-contained HTML page: violations grouped by beamline and proposal.

No external resources: the style and the few lines of script that sort a table when
its column heading is clicked are inline. Every text from the tree is escaped.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Sequence
from html import escape
from typing import Any, TextIO

SEVERITIES = ("critical", "error", "warning", "info")
_COLUMNS = ("severity", "rule", "path", "visit", "expected", "actual", "message")
_NONE = "(none)"

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.9em;width:100%}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3;cursor:pointer;user-select:none;white-space:nowrap}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
td.path{font-family:monospace;word-break:break-all}
tr.critical td.sev{background:#f8c9c9;font-weight:bold}tr.error td.sev{background:#fde0e0}
tr.warning td.sev{background:#fff4cc}tr.info td.sev{background:#e3f2fd}
summary{cursor:pointer;font-weight:bold;margin:.3em 0}.counts{color:#555;font-weight:normal}
"""

_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var asc = !th.classList.contains('asc');
      table.querySelectorAll('th').forEach(function (h) { h.classList.remove('asc', 'desc'); });
      th.classList.add(asc ? 'asc' : 'desc');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute('data-key') || a.cells[col].textContent;
        var y = b.cells[col].getAttribute('data-key') || b.cells[col].textContent;
        return (asc ? 1 : -1) * x.localeCompare(y, undefined, {numeric: true});
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _counts(records: Sequence[dict[str, Any]]) -> str:
    counts = Counter(str(r["severity"]) for r in records)
    return ", ".join(f"{counts[s]} {s}" for s in SEVERITIES if counts[s])


def write_html(
    records: Sequence[dict[str, Any]],
    fields: Sequence[str],
    stream: TextIO,
    *,
    title: str,
) -> None:
    columns = _COLUMNS + tuple(
        f for f in fields if f not in _COLUMNS and f not in ("user_type", "beamline", "proposal")
    )
    groups: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        groups[rec.get("beamline") or _NONE][rec.get("proposal") or _NONE].append(rec)
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>Generated {escape(dt.datetime.now(tz=dt.UTC).isoformat(timespec='seconds'))}. ",
        f"{len(records)} violations" + (f": {escape(_counts(records))}" if records else "") + ".",
        "</p>",
    ]
    if records:
        out.append(_rule_summary(records))
    for beamline in sorted(groups):
        proposals = groups[beamline]
        in_beamline = [r for recs in proposals.values() for r in recs]
        out.append(
            f'<h2 id="bl-{escape(beamline, quote=True)}">Beamline {escape(beamline)} '
            f'<span class="counts">({len(in_beamline)}: {escape(_counts(in_beamline))})</span></h2>'
        )
        for proposal in sorted(proposals):
            recs = sorted(proposals[proposal], key=lambda r: (str(r["path"]), str(r["rule"])))
            out.append(
                f"<details open><summary>Proposal {escape(proposal)} "
                f'<span class="counts">({len(recs)}: {escape(_counts(recs))})</span></summary>'
            )
            out.append(_table(recs, columns))
            out.append("</details>")
    out.append(f"<script>{_SCRIPT}</script></body></html>")
    stream.write("\n".join(out) + "\n")


def _rule_summary(records: Sequence[dict[str, Any]]) -> str:
    by_rule = Counter((str(r["rule"]), str(r["severity"])) for r in records)
    rows = "".join(
        f'<tr><td>{escape(rule)}</td><td>{escape(sev)}</td><td data-key="{n:09d}">{n}</td></tr>'
        for (rule, sev), n in sorted(by_rule.items())
    )
    return (
        '<table class="sortable" style="width:auto"><thead><tr><th>rule</th><th>severity</th>'
        f"<th>count</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _table(records: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    rows = []
    for rec in records:
        severity = str(rec.get("severity"))
        cells = []
        for col in columns:
            value = rec.get(col)
            text = "" if value is None else escape(str(value))
            if col == "severity":
                rank = SEVERITIES.index(severity) if severity in SEVERITIES else 9
                cells.append(f'<td class="sev" data-key="{rank}">{text}</td>')
            elif col == "path":
                cells.append(f'<td class="path">{text}</td>')
            else:
                cells.append(f"<td>{text}</td>")
        rows.append(f'<tr class="{escape(severity, quote=True)}">{"".join(cells)}</tr>')
    return (
        f'<table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
