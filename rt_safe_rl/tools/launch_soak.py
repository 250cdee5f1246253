"""``python -m rt_safe_rl.tools.launch_soak [--duration S] [--json FILE]``: the launched demo as a
user runs it, for a fixed time, and whether it latched.

Builds the package with ``colcon build --symlink-install`` into a temporary workspace, starts
``ros2 launch rt_safe_rl demo.launch.py namespace:=soak`` (one process per node: simulated arm,
human, operator, policy, safety, monitor), waits for the first safe command, then listens for
`--duration` seconds to ``safety/joint_command`` and ``safety/status`` from this process. Prints
one JSON document: time to the first command, commands and their rate, every latched stop seen
(time, fault, detail), the last status, and the exit code of the launch after SIGINT. Exit 0 when
nothing latched. Needs the ``ros2`` CLI and colcon (``make`` installs them from
``../shared/ros2-cli``). Not RT code: a measurement harness.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rt_safe_rl.config import load_config

REPO = Path(__file__).resolve().parents[2]
NS = 'soak'


def _tool(name: str) -> str:
    found = shutil.which(name, path=f'{Path(sys.executable).parent}{os.pathsep}{os.environ.get("PATH", "")}')
    if found is None:
        raise SystemExit(f'launch_soak: {name} not found (make installs it from ../shared/ros2-cli)')
    return found


def build_env(ws: Path) -> dict[str, str]:
    """``colcon build --symlink-install`` of this checkout into `ws`; the sourced environment."""
    res = subprocess.run(
        [
            *(_tool('colcon'), '--log-base', str(ws / 'log'), 'build'),
            *('--symlink-install', '--merge-install'),
            *('--paths', str(REPO), '--build-base', str(ws / 'build'), '--install-base', str(ws / 'install')),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ws,
    )
    if res.returncode != 0:
        raise SystemExit(f'launch_soak: colcon build failed: {res.stderr.strip()[-500:]}')
    install = ws / 'install'
    site = next(install.glob('lib/python3*/site-packages'))
    env = dict(os.environ)
    prefix = env.get('AMENT_PREFIX_PATH', '')
    env['AMENT_PREFIX_PATH'] = os.pathsep.join(p for p in (str(install), prefix) if p)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(site), str(REPO), env.get('PYTHONPATH', '')) if p)
    env['PATH'] = f'{Path(sys.executable).parent}{os.pathsep}{env.get("PATH", "")}'
    env['PYTHONUNBUFFERED'] = '1'
    env['RT_METRICS_PORT'] = '0'
    return env


class Listener:
    """Commands and status of the launched safety node, seen from this process over DDS."""

    def __init__(self, topics: Any) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticStatus
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import JointState

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node('rt_safe_rl_launch_soak', context=self.ctx)
        self.node.create_subscription(
            JointState, f'/{NS}/{topics.joint_command}', self._on_cmd, qos_profile_sensor_data
        )
        self.node.create_subscription(DiagnosticStatus, f'/{NS}/{topics.safety_status}', self._on_status, 50)
        self.cmd_times: list[float] = []
        self.latches: list[dict[str, Any]] = []
        self.status: dict[str, str] = {}
        self._was_latched = False
        self._exec = SingleThreadedExecutor(context=self.ctx)
        self._exec.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _on_cmd(self, msg: Any) -> None:
        self.cmd_times.append(time.monotonic())

    def _on_status(self, msg: Any) -> None:
        self.status = {kv.key: kv.value for kv in msg.values}
        latched = self.status.get('latched') == 'True'
        if latched and not self._was_latched:
            self.latches.append(
                {
                    't_mono_s': time.monotonic(),
                    'fault': self.status.get('fault', ''),
                    'detail': self.status.get('fault_detail', str(msg.message)),
                }
            )
        self._was_latched = latched

    def _spin(self) -> None:
        while not self._stop.is_set():
            self._exec.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._exec.shutdown()
        self.node.destroy_node()
        with contextlib.suppress(Exception):
            import rclpy

            rclpy.try_shutdown(context=self.ctx)


def _stop_launch(proc: subprocess.Popen[bytes]) -> int | None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return None


def _latch(x: dict[str, Any], t0: float) -> dict[str, Any]:
    return {'t_s': round(x['t_mono_s'] - t0, 3), 'fault': x['fault'], 'detail': x['detail']}


def soak(duration_s: float, start_timeout_s: float, log: Path) -> dict[str, Any]:
    """Run the launched demo (see the module docstring); the report."""
    topics = load_config(None).topics
    with tempfile.TemporaryDirectory(prefix='rt_safe_rl_soak_') as tmp:
        env = build_env(Path(tmp))
        listener = Listener(topics)
        t_launch = time.monotonic()
        with open(log, 'wb') as out:
            proc = subprocess.Popen(
                [_tool('ros2'), 'launch', 'rt_safe_rl', 'demo.launch.py', f'namespace:={NS}'],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            while not listener.cmd_times and time.monotonic() - t_launch < start_timeout_s:
                if proc.poll() is not None:
                    break
                time.sleep(0.2)
            first = listener.cmd_times[0] if listener.cmd_times else None
            if first is not None:
                time.sleep(duration_s)
            t_end = time.monotonic()
        finally:
            rc = _stop_launch(proc)
            listener.close()
    n = len(listener.cmd_times)
    return {
        'launch': f'ros2 launch rt_safe_rl demo.launch.py namespace:={NS}',
        'time_to_first_command_s': None if first is None else round(first - t_launch, 2),
        'observed_s': 0.0 if first is None else round(t_end - first, 2),
        'commands': n,
        'command_rate_hz': round(n / (t_end - first), 1) if first is not None and t_end > first else 0.0,
        # stops latched while observed; the controlled stop of the SIGINT at the end is reported apart
        'latched': [_latch(x, first or t_launch) for x in listener.latches if x['t_mono_s'] <= t_end],
        'stop_at_sigint': [_latch(x, first or t_launch) for x in listener.latches if x['t_mono_s'] > t_end],
        'last_status': listener.status,
        'launch_exit_code': rc,
        'log': str(log),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='python -m rt_safe_rl.tools.launch_soak', description=__doc__)
    p.add_argument('--duration', type=float, default=60.0, help='seconds observed after the first command')
    p.add_argument('--start-timeout', type=float, default=600.0, help='seconds to wait for the first command')
    p.add_argument('--json', default='', help='also write the report to this file')
    p.add_argument('--log', default='launch_soak.log', help="the launch's output")
    a = p.parse_args(argv)
    rep = soak(a.duration, a.start_timeout, Path(a.log))
    text = json.dumps(rep, indent=2)
    if a.json:
        Path(a.json).write_text(text + '\n')
    print(text)
    return 0 if rep['time_to_first_command_s'] is not None and not rep['latched'] else 1


if __name__ == '__main__':
    raise SystemExit(main())
