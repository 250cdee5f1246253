"""Fleet report files: ``fleet.json``, ``fleet.md``, a self-contained ``fleet.html`` and one PNG
per metric (the variants side by side, each bag a dot, the variant's aggregate a bar).

Not RT code (file I/O, matplotlib with the Agg backend).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rt_safe_rl.bench.report import write_json
from rt_safe_rl.fleet.results import METRICS, metric_of


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return 'n/a'
    if isinstance(v, float):
        return f'{v:.4g}'
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return '\n'.join(lines)


def plot_name(key: str) -> str:
    """PNG file name of a metric's plot."""
    return 'fleet_' + key.replace('.', '_') + '.png'


def make_plots(doc: Mapping[str, Any]) -> dict[str, bytes]:
    """One PNG per metric of :data:`METRICS`: {file name: png bytes} (metrics with data only)."""
    import matplotlib

    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt

    variants = doc['variants']
    rows = [r for r in doc['rows'] if 'error' not in r]
    out: dict[str, bytes] = {}
    names = [str(v['name']) for v in variants]
    for key, (label, _how) in METRICS.items():
        agg = [metric_of(v, key) for v in variants]
        if all(a is None for a in agg):
            continue
        fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(names) + 2), 3.2))
        ax.bar(
            range(len(names)), [a if a is not None else 0.0 for a in agg], color='#9ecae1', label='variant'
        )
        for i, v in enumerate(variants):
            found = [metric_of(r, key) for r in rows if int(r['variant_index']) == int(v['index'])]
            ys = [y for y in found if y is not None]
            ax.plot([i] * len(ys), ys, 'o', color='#3182bd', ms=4, label='bag' if i == 0 else None)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20, ha='right', fontsize=8)
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.legend(fontsize=7)
        buf = io.BytesIO()
        fig.savefig(buf, format='png', dpi=80, bbox_inches='tight')
        plt.close(fig)
        out[plot_name(key)] = buf.getvalue()
    return out


def render_markdown(doc: Mapping[str, Any], plots: Sequence[str] = ()) -> str:
    """The report as Markdown."""
    s = doc['summary']
    lines = [
        '# Fleet what-if replay',
        '',
        f'Engine: {doc["engine"]}; complete: {doc["complete"]}; rows {s["rows"]} '
        f'({s["ok_rows"]} ok, {s["error_rows"]} errors); violations {s["violations"]}; '
        f'{s["states"]} states replayed.',
        '',
        '## Variants (aggregated over the bags; diff against the first)',
        '',
    ]
    header = ['variant', 'bags', 'errors'] + [METRICS[k][0] for k in METRICS]
    body = []
    for v in doc['variants']:
        cells = [str(v['name']), str(v['bags']), str(v['errors'])]
        for k in METRICS:
            d = v['diff_vs_baseline'][k]['delta'] if v['index'] else None
            cells.append(_fmt(metric_of(v, k)) + (f' ({d:+.3g})' if d is not None else ''))
        body.append(cells)
    lines += [_table(header, body), '', '## Rows', '']
    rh = ['bag', 'variant', 'states', 'interv./min', 'stops', 'stopped s', 'min sep. m', 'below prot. s']
    rh += ['v ratio', 'a ratio', 'violations', 'policy p99 us', 'safety p99 us', 'command sha256 / error']
    rb = []
    for r in doc['rows']:
        if 'error' in r:
            rb.append([Path(r['bag']).name, str(r['variant'])] + [''] * 11 + ['**error**: ' + r['error']])
            continue
        keys = ['states', 'interventions_per_min', 'stops', 'stopped_s', 'min_human_separation_m']
        keys += ['below_protective_s', 'max_velocity_ratio', 'max_acceleration_ratio', 'violations']
        keys += ['policy_us.p99', 'safety_us.p99']
        rb.append(
            [Path(r['bag']).name, str(r['variant'])]
            + [_fmt(metric_of(r, k)) for k in keys]
            + [f'`{r["command_sha256"][:16]}`']
        )
    lines += [_table(rh, rb), '']
    sc = doc.get('scaling') or {}
    if sc:
        lines += ['## Scaling', '', '```', *(f'{k}: {_fmt(v)}' for k, v in sc.items()), '```', '']
    for p in plots:
        lines += [f'![{p}]({p})', '']
    return '\n'.join(lines)


def render_html(doc: Mapping[str, Any], pngs: Mapping[str, bytes]) -> str:
    """A self-contained HTML page: the Markdown's tables as preformatted text and the plots inline."""
    md = render_markdown(doc)
    imgs = ''.join(
        f'<figure><img alt="{html.escape(n)}" src="data:image/png;base64,{base64.b64encode(b).decode()}">'
        f'</figure>'
        for n, b in sorted(pngs.items())
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Fleet what-if replay</title>'
        '<style>body{font-family:sans-serif;margin:2em}pre{font-size:12px}</style></head><body>'
        f'<pre>{html.escape(md)}</pre>{imgs}</body></html>\n'
    )


def write_all(
    doc: dict[str, Any], out_dir: str | Path, json_path: str | Path | None = None
) -> dict[str, Path]:
    """Write fleet.json (and ``json_path`` when given), fleet.md, fleet.html and the plots.

    The JSON is written first, so a plot failure (recorded as ``plot_error``) loses nothing.
    """
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths = {'json': write_json(doc, d / 'fleet.json')}
    pngs: dict[str, bytes] = {}
    try:
        pngs = make_plots(doc)
    except Exception as err:  # broad on purpose: plots are optional; say why in the report
        doc['plot_error'] = f'{type(err).__name__}: {err}'
    for name, data in pngs.items():
        (d / name).write_bytes(data)
    doc['plots'] = sorted(pngs)
    paths['json'] = write_json(doc, d / 'fleet.json')
    if json_path:
        paths['json_copy'] = write_json(doc, json_path)
    (d / 'fleet.md').write_text(render_markdown(doc, sorted(pngs)) + '\n')
    (d / 'fleet.html').write_text(render_html(doc, pngs))
    paths['md'], paths['html'] = d / 'fleet.md', d / 'fleet.html'
    return paths
