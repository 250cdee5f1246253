"""`rt-safe-rl fleet replay` on a real local Ray (one session for the module, 2 CPUs, no
dashboard): rows and error rows, command hashes equal to `bench replay`'s, a worker killed
mid-task retried by Ray, SIGTERM leaving partial results, the scaling figures.

The bags: the recorded run in test/data and two more recorded runs cut from it (time windows
of the same recording, raw messages copied), plus a corrupt, an empty and an unreadable bag.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip('ray', reason='Ray is not installed (requirements-fleet.txt; `make` installs it)')

from rt_safe_rl.bench import replay  # noqa: E402
from rt_safe_rl.fleet import cli, engine  # noqa: E402
from rt_safe_rl.fleet.variants import build_variants  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECORDED = REPO / 'test' / 'data' / 'sim_arm7_1khz'
MAX_MESSAGES = 500
GRID = 'safety.ssm.reaction_time_s=0.1,0.3'


def _cut(src: Path, dst: Path, start_s: float, length_s: float) -> Path:
    """A bag with the raw messages of ``src`` received in [start, start + length) s."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    from rt_safe_rl.bench.bag import typestore

    store = typestore()
    with Reader(src) as r:
        t0 = r.start_time + int(start_s * 1e9)
        t1 = t0 + int(length_s * 1e9)
        w = Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP)
        w.open()
        conns = {c.id: w.add_connection(c.topic, c.msgtype, typestore=store) for c in r.connections}
        for c, t, raw in r.messages():
            if t0 <= t < t1:
                w.write(conns[c.id], t, raw)
        w.close()
    return dst


@pytest.fixture(scope='module')
def bags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp('fleet_bags')
    corrupt = d / 'corrupt'
    corrupt.mkdir()
    (corrupt / 'metadata.yaml').write_text((RECORDED / 'metadata.yaml').read_text())
    data = (RECORDED / 'sim_arm7_1khz.mcap').read_bytes()
    (corrupt / 'sim_arm7_1khz.mcap').write_bytes(data[: len(data) // 3])
    empty = d / 'empty.mcap'
    empty.write_bytes(b'')
    unreadable = d / 'unreadable.mcap'
    unreadable.write_bytes(data)
    unreadable.chmod(0)
    return {
        'run1': RECORDED,
        'run2': _cut(RECORDED, d / 'run2', 0.5, 1.5),
        'run3': _cut(RECORDED, d / 'run3', 1.4, 1.5),
        'corrupt': corrupt,
        'empty': empty,
        'unreadable': unreadable,
    }


@pytest.fixture(scope='module')
def ray_session() -> Any:
    with engine.ray_session(2) as r:
        yield r


def _args(out: Path, *bags: Path, extra: tuple[str, ...] = ()) -> list[str]:
    opts = ['--grid', GRID, '--max-messages', str(MAX_MESSAGES), '--out', str(out), '--no-progress']
    return ['fleet', 'replay', *map(str, bags), *opts, *extra]


def test_fleet_rows_errors_and_hashes_equal_bench_replay(
    ray_session: Any, bags: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rt_safe_rl.cli import main

    runs = [bags['run1'], bags['run2'], bags['run3']]
    if os.geteuid() == 0:
        bad = [bags['corrupt'], bags['empty']]  # root reads a mode-000 file anyway
    else:
        bad = [bags['corrupt'], bags['unreadable']]
    rc = main(_args(tmp_path / 'out', *runs, *bad, extra=('--json', str(tmp_path / 'fleet.json'))))
    assert rc == 0
    doc = json.loads((tmp_path / 'fleet.json').read_text())
    assert doc['engine'] == 'ray' and doc['complete'] and set(doc) >= {'rows', 'variants', 'scaling'}
    rows = doc['rows']
    ok = [r for r in rows if 'error' not in r]
    errors = [r for r in rows if 'error' in r]
    assert len(ok) == 6 and len(errors) == 4, [r.get('error') for r in rows]
    assert all(r['violations'] == 0 and r['complete'] for r in ok)
    assert {Path(r['bag']).name for r in errors} == {p.name for p in bad}
    assert all(r['error'] and '\n' not in r['error'] for r in errors)
    assert [v['bags'] for v in doc['variants']] == [3, 3]
    assert doc['variants'][1]['diff_vs_baseline']['stops']['delta'] is not None
    for name in ('fleet.md', 'fleet.html', 'fleet_stops.png'):
        assert (tmp_path / 'out' / name).is_file()
    # the same bag + variant through `bench replay` gives the same command stream
    variants = build_variants([], [GRID])
    for v in variants:
        row = next(r for r in ok if r['variant_index'] == v.index and Path(r['bag']) == bags['run2'])
        out = tmp_path / f'bench{v.index}'
        args = [str(bags['run2']), '--repeat', '1', '--max-messages', str(MAX_MESSAGES), '--out', str(out)]
        assert replay.main([*args, '--no-progress', *v.bench_args()]) == 0
        rep = json.loads((out / 'report.json').read_text())
        assert rep['determinism']['command_sha256'] == row['command_sha256'], v.name
    capsys.readouterr()


def test_worker_killed_mid_task_is_retried(ray_session: Any, bags: dict[str, Path], tmp_path: Path) -> None:
    v = build_variants([], [])[0]
    pid_file = tmp_path / 'pids'
    spec = {
        'bag': str(bags['run2']),
        'variant': v.to_dict(),
        'config': None,
        'max_messages': 200,
        'pid_file': str(pid_file),
        'start_delay_s': 60.0,  # the first attempt waits to be killed
    }
    out: dict[str, Any] = {}
    th = threading.Thread(target=lambda: out.update(res=engine.run_tasks(ray_session, [spec], 1)))
    th.start()
    end = time.monotonic() + 120
    while not pid_file.exists() and time.monotonic() < end:
        time.sleep(0.1)
    assert pid_file.exists(), 'the task never started'
    first = int(pid_file.read_text().split()[0])
    os.kill(first, signal.SIGKILL)
    th.join(timeout=240)
    assert not th.is_alive()
    rows, complete = out['res']
    pids = [int(p) for p in pid_file.read_text().split()]
    assert complete and len(rows) == 1 and 'error' not in rows[0], rows
    assert len(pids) >= 2 and pids[-1] != first and rows[0]['pid'] == pids[-1]
    assert rows[0]['states'] == 200


def test_sigterm_writes_partial_results(ray_session: Any, bags: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / 'out'
    grid = 'safety.ssm.reaction_time_s=0.1,0.15,0.2,0.25,0.3,0.35,0.4,0.45'

    def killer() -> None:
        end = time.monotonic() + 300
        while time.monotonic() < end:
            try:
                if json.loads((out / 'fleet.json').read_text())['rows']:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    args = [
        'replay',
        str(bags['run2']),
        '--grid',
        grid,
        '--max-messages',
        '300',
        '--out',
        str(out),
        '--no-progress',
    ]
    rc = cli.main([*args, '--workers', '1'])
    th.join(timeout=10)
    assert rc == 130
    doc = json.loads((out / 'fleet.json').read_text())
    assert doc['complete'] is False and 1 <= len(doc['rows']) < 8
    assert (out / 'fleet.md').is_file()


def test_scaling_figures(ray_session: Any, bags: dict[str, Path], tmp_path: Path) -> None:
    """The measurement runs and reports its figures (no threshold: the machine is shared)."""
    out = tmp_path / 'out'
    args = ['replay', str(bags['run2']), str(bags['run3']), '--max-messages', '300', '--out', str(out)]
    assert cli.main([*args, '--no-progress', '--scaling', '--workers', '2']) == 0
    sc = json.loads((out / 'fleet.json').read_text())['scaling']
    assert sc['workers'] == 2 and sc['tasks'] == 2 and sc['hashes_equal_1_vs_n'] is True
    assert sc['speedup'] > 0 and sc['single_process_states_per_s'] > 0 and sc['states_per_s_per_worker'] > 0
