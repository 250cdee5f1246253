"""rt-safe-rl doctor: checks on real /proc and /sys samples (test/data/doctor), apply + restore on a
copy, the live checks read-only, the JSON contract and the verdict line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rt_safe_rl.config import load_config
from rt_safe_rl.doctor import verdict_line
from rt_safe_rl.doctor.apply import apply, planned_writes, restore
from rt_safe_rl.doctor.checks import CHECKS, FAIL, PASS, WARN, make_context, run_checks
from rt_safe_rl.doctor.cli import main as doctor_main
from rt_safe_rl.doctor.sysfs import cpu_times, format_cpulist, limits, parse_cpulist, steal_percent

VM = Path(__file__).resolve().parent / 'data' / 'doctor' / 'firecracker_vm'
NAMES = {fn.__name__.removeprefix('check_') for fn in CHECKS}
ISSUE_CHECKS = {
    'preempt_rt', 'isolcpus', 'nohz_full', 'rcu_nocbs', 'rt_throttling', 'cpu_governor', 'smt_siblings',
    'irq_affinity', 'idle_states', 'transparent_hugepages', 'hugepages', 'swap', 'rtprio_limit',
    'memlock_limit', 'capabilities', 'clocksource', 'timer_slack', 'numa', 'virtualization', 'cpu_steal',
    'foreign_fifo_threads',
}  # fmt: skip


@pytest.fixture
def vm_copy(tmp_path: Path) -> Path:
    """A writable copy of the real files sampled on this project's Firecracker VM."""
    dst = tmp_path / 'root'
    shutil.copytree(VM, dst)
    return dst


def _by_name(root: Path, **kw: object) -> dict[str, object]:
    ctx = make_context(load_config(), root, **kw)  # type: ignore[arg-type]
    return {c.name: c for c in run_checks(ctx)}


def test_parsers() -> None:
    """cpulists, limits, steal accounting."""
    assert parse_cpulist('domain,managed_irq,2-4,7') == {2, 3, 4, 7}
    assert format_cpulist({0, 1, 2, 5}) == '0-2,5'
    lim = limits((VM / 'proc/self/limits').read_text())
    assert lim['Max realtime priority'] == ('0', '0')
    a = cpu_times('cpu1 10 0 10 70 0 0 0 10 0 0\n')
    b = cpu_times('cpu1 20 0 20 140 0 0 0 20 0 0\n')
    assert steal_percent(a, b) == {1: 10.0}


def test_vm_sample_gives_the_expected_verdicts() -> None:
    """The real VM sample: not PREEMPT_RT, nothing isolated, throttling on, IRQs on CPU1, a VM."""
    assert NAMES == ISSUE_CHECKS
    checks = _by_name(VM)
    assert set(checks) == ISSUE_CHECKS
    status = {k: c.status for k, c in checks.items()}  # type: ignore[attr-defined]
    assert status['preempt_rt'] == WARN and 'PREEMPT_DYNAMIC' in checks['preempt_rt'].value  # type: ignore[attr-defined]
    for name in ('isolcpus', 'nohz_full', 'rcu_nocbs', 'rt_throttling', 'irq_affinity', 'virtualization'):
        assert status[name] == WARN, name
    assert status['cpu_governor'] == WARN  # no cpufreq inside the VM
    for name in ('transparent_hugepages', 'swap', 'clocksource', 'numa', 'idle_states', 'smt_siblings'):
        assert status[name] == PASS, name
    for c in checks.values():
        assert c.status in (PASS, WARN, FAIL)  # type: ignore[attr-defined]
        assert set(c.as_dict()) == {'name', 'status', 'value', 'fix'}  # type: ignore[attr-defined]
        if c.status != PASS:  # type: ignore[attr-defined]
            assert c.fix, f'{c.name}: a non-PASS check names its fix'  # type: ignore[attr-defined]


def test_tuned_host_passes(vm_copy: Path) -> None:
    """The same files edited as on a tuned host: isolation, no throttling; THP 'always' warns."""
    (vm_copy / 'proc/cmdline').write_text('isolcpus=domain,managed_irq,1 nohz_full=1 rcu_nocbs=1 quiet\n')
    (vm_copy / 'sys/devices/system/cpu/isolated').write_text('1\n')
    (vm_copy / 'proc/sys/kernel/sched_rt_runtime_us').write_text('-1\n')
    (vm_copy / 'proc/version').write_text('Linux version 6.8.0-rt #1 SMP PREEMPT_RT\n')
    (vm_copy / 'sys/kernel/mm/transparent_hugepage/enabled').write_text('[always] madvise never\n')
    status = {k: c.status for k, c in _by_name(vm_copy).items()}  # type: ignore[attr-defined]
    for name in ('preempt_rt', 'isolcpus', 'nohz_full', 'rcu_nocbs', 'rt_throttling'):
        assert status[name] == PASS, name
    assert status['transparent_hugepages'] == WARN


def test_apply_then_restore_on_a_copy(vm_copy: Path, tmp_path: Path) -> None:
    """--apply changes only reversible settings under the root and --restore brings back every byte."""
    (vm_copy / 'sys/kernel/mm/transparent_hugepage/enabled').write_text('[always] madvise never\n')
    before = {p: p.read_bytes() for p in vm_copy.rglob('*') if p.is_file()}
    ctx = make_context(load_config(), vm_copy)
    plan = planned_writes(ctx)
    assert {w['why'] for w in plan} == {'irq_affinity', 'rt_throttling', 'transparent_hugepages'}
    rf = tmp_path / 'restore.json'
    res = apply(ctx, rf)
    assert not res['failed'] and len(res['applied']) == len(plan)
    assert (vm_copy / 'proc/sys/kernel/sched_rt_runtime_us').read_text().strip() == '-1'
    assert (vm_copy / 'proc/irq/26/smp_affinity_list').read_text().strip() == '0'
    assert json.loads(rf.read_text())['writes'], 'the restore file lists the writes'
    after = make_context(load_config(), vm_copy)
    assert not planned_writes(after), 'nothing left to apply'
    restore(rf)
    text = {p: p.read_bytes() for p in vm_copy.rglob('*') if p.is_file()}
    thp = vm_copy / 'sys/kernel/mm/transparent_hugepage/enabled'
    changed = [p for p in before if p != thp and before[p].strip() != text[p].strip()]
    assert changed == []
    assert thp.read_text().strip() == 'always'  # the kernel reads it back as '[always] madvise never'


def test_cli_on_a_copy_writes_the_json_contract(
    vm_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """doctor --json on a root copy, then --apply and --restore there (never on the live system)."""
    out = tmp_path / 'doctor.json'
    assert doctor_main(['--root', str(vm_copy), '--floor-s', '0', '--json', str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc) >= {'checks', 'floor', 'verdict'}
    assert {c['name'] for c in doc['checks']} == ISSUE_CHECKS
    assert doc['verdict'].startswith('machine: VM, not PREEMPT_RT')
    assert json.loads(capsys.readouterr().out) == doc
    rf = tmp_path / 'r.json'
    assert doctor_main(['--root', str(vm_copy), '--floor-s', '0', '--apply', '--restore-file', str(rf)]) == 0
    assert (vm_copy / 'proc/sys/kernel/sched_rt_runtime_us').read_text().strip() == '-1'
    assert doctor_main(['--root', str(vm_copy), '--restore', str(rf)]) == 0
    assert (vm_copy / 'proc/sys/kernel/sched_rt_runtime_us').read_text().strip() == '950000'


def test_live_checks_are_read_only_and_well_formed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The live system, read-only, with a short floor: the contract holds (values are this machine's)."""
    out = tmp_path / 'live.json'
    assert doctor_main(['--floor-s', '0.3', '--json', str(out)]) == 0
    doc = json.loads(out.read_text())
    assert {c['name'] for c in doc['checks']} == ISSUE_CHECKS
    assert all(c['status'] in (PASS, WARN, FAIL) for c in doc['checks'])
    floor = doc['floor']
    for loop in ('c', 'python'):
        assert 'skipped' in floor[loop] or {'lateness_us', 'misses_per_1e4'} <= set(floor[loop])
    assert 'apply' not in doc
    line = verdict_line(measure_s=0.2)
    assert line.startswith('machine: ') and '\n' not in line
