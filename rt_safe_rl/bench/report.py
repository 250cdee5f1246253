"""Benchmark reports: metadata, ``report.json``, ``report.md``, a self-contained ``report.html``,
PNG plots, and the ``--baseline`` regression check.

JSON schema (``REPORT_SCHEMA`` names the version; more keys may be added, none removed)::

    {
      "schema": "rt_safe_rl.bench.replay/1",
      "metadata": {git_sha, git_dirty, host, cpu, cpu_count, kernel, rt: {...}, versions: {...},
                   config: {...}, bag: {path, storage, sha256, topics, ...}, model: {path, sha256},
                   command_line, started_utc},
      "complete": bool,             # false when interrupted; partial results kept
      "messages": int,              # measured state messages (all repeats, warm-up excluded)
      "throughput_msgs_per_s": float,
      "rate": {"mode": "max"|"recorded"|"fixed", "hz": float},
      "deadline_us": float,
      "stages": {"e2e_us"|"inference_us"|"safety_us"|"replay_to_input_us"|"period_jitter_us":
                 {"count","min","mean","std","p50","p90","p99","p999","max"}},
      # period_jitter_us = |output interval - scheduled release interval| (paced replays only)
      "misses": int, "miss_rate": float, "interventions": int,
      "rt": {"gc_disabled": bool, "replay_thread": {requested, granted, warnings} | str},
      "process": {"cpu_percent": float, "rss_mb": float, "rss_peak_mb": float},
      "histogram": {"e2e_us": {"edges": [...], "counts": [...]}},
      "determinism": {"identical": bool, "command_sha256": str, "runs": [sha, ...]},
      "fidelity": {"topic", "compared", "max_abs_diff_rad": {...}} (bag with recorded commands),
      "stress": {"workers": int, "duty": float},
      "naive": {"messages": int, "stages": {...}, "misses": int, "lost": int, ...} (with --naive),
      "ratios": {"e2e_p99_naive_over_ours": float, "e2e_p50_naive_over_ours": float, ...},
      "comparison": {"baseline": path, "tolerance": float, "passed": bool, "rows": [...]}
    }

Not RT-safe (file I/O, matplotlib): called after the replay.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# metadata lives in bench/metadata.py; re-exported here (replay, faults, fleet, tests use report.*)
from rt_safe_rl.bench.metadata import collect_metadata, cpu_model, rt_capabilities, sha256_file
from rt_safe_rl.core import stats
from rt_safe_rl.core.errors import RtSafeRlError

REPORT_SCHEMA = 'rt_safe_rl.bench.replay/1'
STAGE_LABELS: dict[str, str] = {
    'e2e_us': 'End-to-end: state in -> safe command out (us)',
    'inference_us': 'Policy step (us)',
    'safety_us': 'Safety filter step (us)',
    'replay_to_input_us': 'Replay release -> policy input (us)',
    'period_jitter_us': 'Output period jitter |dt - T| (us)',
    'node_policy_step_us': "Model time per policy step, the policy node's own measurement (us)",
    'node_safety_step_us': "process_action, the safety node's own measurement (us)",
}


__all__ = [
    'REPORT_SCHEMA',
    'STAGE_HEADER',
    'STAGE_LABELS',
    'ReportError',
    'collect_metadata',
    'compare',
    'comparison_table',
    'cpu_model',
    'load_report',
    'make_plots',
    'plain',
    'render_html',
    'render_markdown',
    'rt_capabilities',
    'sha256_file',
    'stage_rows',
    'write_all',
    'write_json',
]


class ReportError(RtSafeRlError):
    """A baseline report is missing, unreadable or not a replay report."""


# ---------------------------------------------------------------------------------------------
# writing


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _clean(obj: Any) -> Any:
    """NaN/inf -> None so the JSON is standard (json.dumps would write NaN)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def plain(report: Mapping[str, Any]) -> Any:
    """JSON-able copy of ``report`` (numpy -> Python, NaN -> None)."""
    return _clean(json.loads(json.dumps(report, default=_json_default)))


_plain = plain  # the old private name


def write_json(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``report`` as standard JSON (NaN -> null), atomically (tmp + rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + '.tmp')
    text = json.dumps(plain(report), indent=2, allow_nan=False)
    tmp.write_text(text + '\n')
    os.replace(tmp, p)
    return p


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return 'n/a'
    if isinstance(v, float):
        return f'{v:.{digits}f}'
    return str(v)


def stage_rows(stages: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """Table rows ``[stage, count, p50, p90, p99, p99.9, max, mean]`` (us)."""
    rows = []
    for name, s in stages.items():
        rows.append(
            [name, _fmt(int(s['count']) if s.get('count') is not None else None)]
            + [_fmt(s.get(k)) for k in ('p50', 'p90', 'p99', 'p999', 'max', 'mean')]
        )
    return rows


STAGE_HEADER = ['stage', 'count', 'p50', 'p90', 'p99', 'p99.9', 'max', 'mean']


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    out += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return '\n'.join(out)


def _rate_text(report: Mapping[str, Any]) -> str:
    rate = report.get('rate', {})
    mode = rate.get('mode', '?')
    if mode == 'max':
        return 'max (as fast as the pipeline goes)'
    if mode == 'recorded':
        return 'recorded timing'
    return f'fixed {_fmt(rate.get("hz"))} Hz'


def _md_head(report: Mapping[str, Any]) -> list[str]:
    """The Markdown report's title, run description (bag, rates, pipeline, model, machine), headline
    figures and latency table."""
    md = report.get('metadata', {})
    title = '# Replay benchmark' + ('' if report.get('complete') else ' (INCOMPLETE: interrupted)')
    lines = [title, '']
    bag = md.get('bag', {})
    model = md.get('model', {})
    lines += [
        f'- bag: `{bag.get("path", "?")}` ({bag.get("storage", "?")}, '
        f'sha256 `{str(bag.get("sha256", ""))[:16]}`)',
        f'- state topic: `{report.get("state_topic", "?")}` (recorded at '
        f'{_fmt(report.get("rate", {}).get("recorded_hz"))} Hz), replay rate: {_rate_text(report)}, '
        f'repeats: {report.get("repeats", "?")}',
        f'- pipeline: {report.get("pipeline", {}).get("description", "?")}',
        f'- model: `{model.get("path", "")}` sha256 `{str(model.get("sha256", ""))[:16]}`',
        f'- machine: {md.get("host", "?")}, {md.get("cpu", "?")} x{md.get("cpu_count", "?")}, kernel '
        f'{md.get("kernel", "?")} (RT kernel: {md.get("rt", {}).get("realtime_kernel", "?")}), git '
        f'`{str(md.get("git_sha", ""))[:10]}`{" (dirty)" if md.get("git_dirty") else ""}',
        f'- stress workers: {report.get("stress", {}).get("workers", 0)}',
        '',
        f'**{report.get("messages", 0)} messages, {_fmt(report.get("throughput_msgs_per_s"), 0)} msgs/s, '
        f'{report.get("misses", 0)} deadline misses (> {_fmt(report.get("deadline_us"))} us, rate '
        f'{_fmt(100.0 * float(report.get("miss_rate") or 0.0), 3)} %), {report.get("interventions", 0)} '
        f'safety interventions, {report.get("safety_faults", "n/a")} latched safety faults.**',
        '',
        '## Latency (microseconds)',
        '',
        _md_table(STAGE_HEADER, stage_rows(report.get('stages', {}))),
        '',
    ]
    return lines


def render_markdown(report: Mapping[str, Any], plots: Sequence[str] = ()) -> str:
    """The report as Markdown (tables of stages, naive comparison, determinism, comparison)."""
    lines = _md_head(report)
    proc = report.get('process', {})
    if proc:
        lines += [
            f'Process: CPU {_fmt(proc.get("cpu_percent"))} % of one core, '
            f'RSS {_fmt(proc.get("rss_mb"))} MB (peak {_fmt(proc.get("rss_peak_mb"))} MB).',
            '',
        ]
    det = report.get('determinism', {})
    lines += [
        '## Determinism',
        '',
        f'identical command streams across {len(det.get("runs", []))} runs: '
        f'**{det.get("identical")}**; '
        f'command SHA-256 `{det.get("command_sha256", "")}`',
        '',
    ]
    fid = report.get('fidelity')
    if fid:
        d = fid.get('max_abs_diff_rad', {})
        lines += [
            f'Replay fidelity: replayed vs recorded safe commands on `{fid.get("topic")}` '
            f'({fid.get("compared")} states): max |diff| p50 {_fmt(d.get("p50"), 4)}, '
            f'p99 {_fmt(d.get("p99"), 4)}, max {_fmt(d.get("max"), 4)} rad.',
            '',
        ]
    naive = report.get('naive')
    if naive:
        lines += [
            '## Naive pipeline (plain rclpy nodes over DDS, default executor, eager torch)',
            '',
            naive.get('description', ''),
            '',
            _md_table(STAGE_HEADER, stage_rows(naive.get('stages', {}))),
            '',
            f'messages {naive.get("messages")}, lost {naive.get("lost")}, misses {naive.get("misses")}',
            '',
        ]
        ratios = report.get('ratios', {})
        lines += [_md_table(['ratio', 'value'], [[k, _fmt(v, 2)] for k, v in ratios.items()]), '']
    comp = report.get('comparison')
    if comp:
        lines += [
            '## Regression check against baseline',
            '',
            f'baseline `{comp.get("baseline")}`, '
            f'tolerance {_fmt(100 * comp.get("tolerance", 0), 0)} %: '
            f'**{"PASSED" if comp.get("passed") else "FAILED"}**',
            '',
            comparison_table(comp, markdown=True),
            '',
        ]
    for p in plots:
        lines += [f'![{p}]({p})', '']
    return '\n'.join(lines)


def render_html(report: Mapping[str, Any], plot_png: Mapping[str, bytes]) -> str:
    """One self-contained HTML file: the Markdown tables as HTML plus the plots inlined as base64."""
    md_text = render_markdown(report)
    body: list[str] = []
    in_table = False
    for line in md_text.splitlines():
        if line.startswith('|'):
            cells = [html.escape(c.strip()) for c in line.strip('|').split('|')]
            if all(set(c) <= {'-'} for c in cells):
                continue
            if not in_table:
                body.append('<table>')
                in_table = True
                body.append('<tr>' + ''.join(f'<th>{c}</th>' for c in cells) + '</tr>')
            else:
                body.append('<tr>' + ''.join(f'<td>{c}</td>' for c in cells) + '</tr>')
            continue
        if in_table:
            body.append('</table>')
            in_table = False
        if line.startswith('## '):
            body.append(f'<h2>{html.escape(line[3:])}</h2>')
        elif line.startswith('# '):
            body.append(f'<h1>{html.escape(line[2:])}</h1>')
        elif line.startswith('- '):
            body.append(f'<li>{_inline(line[2:])}</li>')
        elif line.strip():
            body.append(f'<p>{_inline(line)}</p>')
    if in_table:
        body.append('</table>')
    for name, png in plot_png.items():
        b64 = base64.b64encode(png).decode('ascii')
        label = html.escape(name)
        body.append(f'<h3>{label}</h3><img alt="{label}" src="data:image/png;base64,{b64}">')
    raw = html.escape(json.dumps(plain(report), indent=1))
    body.append(f'<details><summary>report.json</summary><pre>{raw}</pre></details>')
    style = (
        'body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}'
        'table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #999;padding:2px 8px;'
        'text-align:right}th{background:#eee}img{max-width:100%}pre{font-size:11px}'
    )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>rt_safe_rl replay benchmark</title>'
        f'<style>{style}</style></head><body>' + '\n'.join(body) + '</body></html>\n'
    )


def _inline(text: str) -> str:
    out = html.escape(text)
    parts = out.split('**')
    out = ''.join(f'<b>{p}</b>' if i % 2 else p for i, p in enumerate(parts))
    parts = out.split('`')
    return ''.join(f'<code>{p}</code>' if i % 2 else p for i, p in enumerate(parts))


def make_plots(
    samples_us: Mapping[str, npt.NDArray[np.float64]],
    t_s: npt.NDArray[np.float64] | None,
    bins: int = 60,
    deadline_us: float = 0.0,
) -> dict[str, bytes]:
    """PNG plots: latency histogram, CDF, e2e over time. ``samples_us``: stage -> samples (us).

    Returns ``{file name: png bytes}``. Uses the Agg backend (no display needed).
    """
    import matplotlib

    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    series = {k: np.asarray(v, dtype=np.float64) for k, v in samples_us.items() if np.asarray(v).size}
    if not series:
        return out

    def save(fig: Any, name: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format='png', dpi=90, bbox_inches='tight')
        plt.close(fig)
        out[name] = buf.getvalue()

    lo = max(1e-3, min(float(np.min(v[v > 0])) if np.any(v > 0) else 1.0 for v in series.values()))
    hi = max(float(np.max(v)) for v in series.values())
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, v in series.items():
        counts, edges = stats.histogram(v, bins=bins, log=True, lo=lo, hi=hi)
        ax.stairs(counts, edges, label=name)
    if deadline_us > 0:
        ax.axvline(deadline_us, color='r', ls='--', lw=1, label=f'deadline {deadline_us:.0f} us')
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('latency (us)')
    ax.set_ylabel('messages')
    ax.set_title('Latency histogram')
    ax.legend(fontsize=8)
    save(fig, 'latency_histogram.png')

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, v in series.items():
        xs, f = stats.cdf(v)
        ax.plot(xs, 1.0 - f + 1.0 / max(1, xs.size), label=name)
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('latency (us)')
    ax.set_ylabel('fraction of messages at least this slow')
    ax.set_title('Latency tail (complementary CDF)')
    ax.legend(fontsize=8)
    save(fig, 'latency_cdf.png')

    e2e = series.get('e2e_us')
    if e2e is not None:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        x: npt.NDArray[Any] = t_s if t_s is not None and t_s.size == e2e.size else np.arange(e2e.size)
        ax.plot(x, e2e, ',', alpha=0.6)
        if deadline_us > 0:
            ax.axhline(deadline_us, color='r', ls='--', lw=1)
        ax.set_yscale('log')
        ax.set_xlabel('replay time (s)' if t_s is not None and t_s.size == e2e.size else 'message')
        ax.set_ylabel('e2e latency (us)')
        ax.set_title('End-to-end latency over time')
        save(fig, 'latency_over_time.png')
    return out


def write_all(
    report: dict[str, Any],
    out_dir: str | Path,
    samples_us: Mapping[str, npt.NDArray[np.float64]] | None = None,
    t_s: npt.NDArray[np.float64] | None = None,
    bins: int = 60,
) -> dict[str, Path]:
    """Write report.json, report.md, report.html and the PNG plots into ``out_dir``.

    Plot failures never lose the JSON: it is written first, and again with the plot list.
    Returns the written paths by kind.
    """
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    paths = {'json': write_json(report, d / 'report.json')}
    pngs: dict[str, bytes] = {}
    try:
        deadline = float(report.get('deadline_us') or 0.0)
        pngs = make_plots(samples_us or {}, t_s, bins=bins, deadline_us=deadline)
    except Exception as err:  # broad on purpose: plots are optional; say why in the report
        report['plot_error'] = f'{type(err).__name__}: {err}'
    for name, data in pngs.items():
        (d / name).write_bytes(data)
        paths[name] = d / name
    report['plots'] = sorted(pngs)
    paths['json'] = write_json(report, d / 'report.json')
    (d / 'report.md').write_text(render_markdown(report, sorted(pngs)) + '\n')
    paths['md'] = d / 'report.md'
    (d / 'report.html').write_text(render_html(report, pngs))
    paths['html'] = d / 'report.html'
    return paths


# ---------------------------------------------------------------------------------------------
# regression check


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a replay report.json (a directory means DIR/report.json).

    Raises:
        ReportError: missing, not JSON, or lacking ``stages.e2e_us.p99``.
    """
    p = Path(path)
    if p.is_dir():
        p = p / 'report.json'
    if not p.is_file():
        raise ReportError(f'baseline report not found: {p}')
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise ReportError(f'baseline {p} is not valid JSON: {err}') from None
    if not isinstance(data, dict) or 'stages' not in data or 'e2e_us' not in data.get('stages', {}):
        raise ReportError(f'baseline {p} is not a replay report (no stages.e2e_us)')
    return data


def _get(d: Mapping[str, Any], path: str) -> float:
    cur: Any = d
    for part in path.split('.'):
        if not isinstance(cur, Mapping) or part not in cur:
            return math.nan
        cur = cur[part]
    try:
        return float(cur) if cur is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


# (metric path, gate?) — gated metrics fail the check when worse beyond tolerance
COMPARED: tuple[tuple[str, bool], ...] = (
    ('stages.e2e_us.p99', True),
    ('miss_rate', True),
    ('stages.e2e_us.p50', False),
    ('stages.e2e_us.p999', False),
    ('stages.inference_us.p99', False),
    ('stages.safety_us.p99', False),
    ('throughput_msgs_per_s', False),
)


def compare(
    current: Mapping[str, Any], baseline: Mapping[str, Any], tolerance: float = 0.10, baseline_path: str = ''
) -> dict[str, Any]:
    """Compare ``current`` with ``baseline``: e2e p99 and miss rate gate, others informative.

    A gated metric fails when ``current > baseline * (1 + tolerance)``. The miss-rate limit is
    at least 1e-4 (one miss in 10,000 messages, i.e. one VM stall), because a relative tolerance
    on a zero baseline would fail on any single miss.
    Returns ``{'passed', 'tolerance', 'baseline', 'rows': [{metric, baseline, current, change, gate, ok}]}``.
    """
    rows = []
    passed = True
    for metric, gate in COMPARED:
        b = _get(baseline, metric)
        c = _get(current, metric)
        change = (c - b) / b if (math.isfinite(b) and math.isfinite(c) and b > 0) else math.nan
        ok = True
        if gate and math.isfinite(c) and math.isfinite(b):
            limit = b * (1.0 + tolerance)
            if metric == 'miss_rate':
                limit = max(limit, 1e-4)
            ok = c <= limit
        elif gate and not math.isfinite(c):
            ok = False
        passed = passed and ok
        rows.append({'metric': metric, 'baseline': b, 'current': c, 'change': change, 'gate': gate, 'ok': ok})
    return {'baseline': baseline_path, 'tolerance': tolerance, 'passed': passed, 'rows': rows}


def comparison_table(comp: Mapping[str, Any], markdown: bool = False) -> str:
    """The comparison as a text (or Markdown) table."""
    header = ['metric', 'baseline', 'current', 'change', 'gate', 'result']
    rows = []
    for r in comp.get('rows', []):
        ch = r.get('change')
        rows.append(
            [
                r['metric'],
                _fmt(r.get('baseline'), 3),
                _fmt(r.get('current'), 3),
                'n/a' if ch is None or not math.isfinite(ch) else f'{100 * ch:+.1f} %',
                'yes' if r.get('gate') else 'no',
                'ok' if r.get('ok') else 'WORSE',
            ]
        )
    if markdown:
        return _md_table(header, rows)
    widths = [
        max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
        for i in range(len(header))
    ]
    lines = ['  '.join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ['  '.join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return '\n'.join(lines)
