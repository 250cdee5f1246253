"""The package as a ROS user drives it: ``colcon build`` (into a temporary install), then the real
``ros2`` command line from ``../shared/ros2-cli`` (or a sourced ROS 2): ``ros2 launch rt_safe_rl
rt_safe_rl.launch.py`` with a namespace, remaps and arguments (the simulators from ``sim.launch.py``
stand in for the robot), ``ros2 topic echo --once /diagnostics``, ``ros2 param set`` of a safety
limit (applied: the command stream follows it) and of an invalid value (refused with the reason),
``ros2 lifecycle set`` deactivate / activate (commands stop and resume), ``ros2 service call`` of
the reset service. These are the commands of README "Deploying on a robot".

Behaviour only, generous timeouts (a loaded 2-vCPU machine needs minutes to start six Python
processes). Teardown: SIGINT to each launch's process group, SIGKILL after 60 s, and
``ros2 daemon stop`` (the CLI's discovery daemon is a DDS participant too).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy', reason='rclpy not installed (ROS 2 wheels or a sourced ROS 2 needed)')

REPO = Path(__file__).resolve().parent.parent
SHARED_CLI = REPO.parent / 'shared' / 'ros2-cli'
NS = f'cli{os.getpid()}'
CMD_TOPIC = f'/{NS}/arm/commands'
STATES_TOPIC = f'/{NS}/arm/joint_states'
START_TIMEOUT_S = 600.0  # first command after launch (numba / backend selection under load)
CLI_TIMEOUT_S = 120.0  # one CLI call (import + discovery + answer) on a loaded machine


def _ros2_executable() -> str | None:
    here = Path(sys.executable).parent / 'ros2'
    return str(here) if here.exists() else shutil.which('ros2')


def _skip_reason() -> str | None:
    if importlib.util.find_spec('ros2launch') is None or _ros2_executable() is None:
        if SHARED_CLI.is_dir():
            return (
                'the ros2 CLI is not installed in this environment: run '
                '../shared/ros2-cli/install.sh .venv/bin/python (the make set-up does)'
            )
        return '../shared/ros2-cli is absent and no ROS 2 with ros2launch is sourced'
    if shutil.which('colcon', path=f'{Path(sys.executable).parent}:{os.environ.get("PATH", "")}') is None:
        return 'colcon is not installed (requirements-dev.txt)'
    return None


@pytest.fixture(scope='module')
def ros2_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of a user who ran ``colcon build --symlink-install`` and sourced the install."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    ws = tmp_path_factory.mktemp('colcon_ws')
    colcon = shutil.which('colcon', path=f'{Path(sys.executable).parent}:{os.environ.get("PATH", "")}')
    assert colcon is not None
    res = subprocess.run(
        [
            *(colcon, '--log-base', str(ws / 'log'), 'build', '--symlink-install', '--merge-install'),
            *('--paths', str(REPO), '--build-base', str(ws / 'build'), '--install-base', str(ws / 'install')),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ws,
    )
    assert res.returncode == 0, f'colcon build failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}'
    install = ws / 'install'
    site = next(install.glob('lib/python3*/site-packages'))
    env = dict(os.environ)
    env['AMENT_PREFIX_PATH'] = os.pathsep.join(
        p for p in (str(install), env.get('AMENT_PREFIX_PATH', '')) if p
    )
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(site), str(REPO), env.get('PYTHONPATH', '')) if p)
    env['PATH'] = f'{Path(sys.executable).parent}{os.pathsep}{env.get("PATH", "")}'
    env['PYTHONUNBUFFERED'] = '1'
    env['RT_METRICS_PORT'] = '0'  # ephemeral Prometheus port: other deployments may hold 9090
    return env


#: CLI answers that mean discovery has not caught up yet (not the node's answer)
TRANSIENT = ('Node not found', 'Wait for service timed out')


def ros2(env: dict[str, str], *args: str, timeout: float = CLI_TIMEOUT_S) -> str:
    """Run ``ros2 ARGS`` and return stdout + stderr (the exit status is in the text on failure).
    A :data:`TRANSIENT` answer (the CLI's new participant has not discovered the node or its
    parameter services yet: discovery can lag on a loaded machine), or a CLI process killed by a
    signal before it printed anything, is retried for up to 60 s, as a user would run the command
    again."""
    exe = _ros2_executable()
    assert exe is not None
    end = time.monotonic() + 60.0
    while True:
        try:
            res = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            # seen on a loaded CI machine: `ros2 param set` printed the node's answer, then its
            # process never exited (shutting down its own DDS participant / daemon client); the
            # answer came from the node, the hang is the CLI's -- keep the answer, say so
            out = _text(e.stdout) + _text(e.stderr)
            if not out.strip():
                raise
            return f'{out}\n[ros2 CLI killed after {timeout:.0f} s: it answered, then did not exit]'
        out = res.stdout + res.stderr
        # seen once in a fresh-clone CI run: the CLI process died of a signal (SIGSEGV) before it
        # printed anything -- the CLI's own crash, not the node's answer: run it again, as above
        crashed = res.returncode < 0 and not out.strip()
        if not (crashed or any(t in out for t in TRANSIENT)) or time.monotonic() > end:
            break
        time.sleep(2.0)
    return out if res.returncode == 0 else f'{out}\n[exit status {res.returncode}]'


def _text(data: bytes | str | None) -> str:
    """Partial output of a timed-out subprocess as text (bytes on POSIX even with text=True)."""
    if data is None:
        return ''
    return data.decode(errors='replace') if isinstance(data, bytes) else data


class Deployment:
    """Two ``ros2 launch`` process groups and a command listener in this process."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        common = [
            f'namespace:={NS}',
            f'robot_command_topic:={CMD_TOPIC}',
            f'joint_states_topic:={STATES_TOPIC}',
        ]
        last = max(os.sched_getaffinity(0))
        self.launch(
            'rt_safe_rl.launch.py', [*common, f'control_cpus:={last}', 'safety_priority:=82'], log_dir
        )
        self.launch('sim.launch.py', [*common, f'control_cpus:={last}'], log_dir)
        self.commands: deque[tuple[float, np.ndarray]] = deque(maxlen=20000)
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from std_msgs.msg import Float64MultiArray

        self.node = rclpy.create_node('cli_test_listener', context=self.ctx)
        self.node.create_subscription(Float64MultiArray, CMD_TOPIC, self._on_cmd, qos_profile_sensor_data)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def launch(self, file: str, args: list[str], log_dir: Path) -> None:
        exe = _ros2_executable()
        assert exe is not None
        log = log_dir / f'{file}.log'
        self.logs.append(log)
        with open(log, 'wb') as f:
            self.procs.append(
                subprocess.Popen(
                    [exe, 'launch', 'rt_safe_rl', file, *args],
                    env=self.env,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: the teardown signals all of it
                )
            )

    def _on_cmd(self, msg: Any) -> None:
        self.commands.append((time.monotonic(), np.asarray(msg.data, dtype=np.float64)))

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def log_tail(self, n: int = 4000) -> str:
        return '\n'.join(
            f'--- {p.name}\n{p.read_text(errors="replace")[-n:]}' for p in self.logs if p.exists()
        )

    def check_alive(self) -> None:
        for p in self.procs:
            assert p.poll() is None, f'a launch exited with {p.returncode}:\n{self.log_tail()}'

    def wait_commands(self, after_s: float, timeout_s: float) -> bool:
        """True once a command arrived later than monotonic `after_s` (within `timeout_s`)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.commands and self.commands[-1][0] > after_s:
                return True
            self.check_alive()
            time.sleep(0.2)
        return False

    def commands_between(self, t0: float, t1: float) -> list[tuple[float, np.ndarray]]:
        return [(t, q) for t, q in list(self.commands) if t0 <= t <= t1]

    def close(self) -> list[str]:
        """Stop everything; returns the process groups that had to be killed."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)
        killed = []
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGINT)
        end = time.monotonic() + 60.0
        for p in self.procs:
            try:
                p.wait(timeout=max(1.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed.append(str(p.args))
        for p in self.procs:  # the nodes too, not only the launch process
            with contextlib.suppress(ProcessLookupError):
                while time.monotonic() < end:
                    os.killpg(p.pid, 0)
                    time.sleep(0.5)
                os.killpg(p.pid, signal.SIGKILL)
                killed.append(f'process group {p.pid}')
        return killed


@pytest.fixture(scope='module')
def deployment(ros2_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    dep = Deployment(ros2_env, tmp_path_factory.mktemp('launch_logs'))
    try:
        assert dep.wait_commands(0.0, START_TIMEOUT_S), f'no command on {CMD_TOPIC}:\n{dep.log_tail()}'
        yield dep
    finally:
        killed = dep.close()
        ros2(ros2_env, 'daemon', 'stop', timeout=60)
        assert not killed, f'had to SIGKILL {killed}:\n{dep.log_tail()}'


def test_launch_with_namespace_remaps_and_arguments(deployment: Deployment) -> None:
    env = deployment.env
    want = [
        f'/{NS}/{n}'
        for n in ('safety_node', 'policy_node', 'monitor', 'sim_robot', 'sim_human', 'sim_operator')
    ]
    end = time.monotonic() + 2 * CLI_TIMEOUT_S
    while True:  # discovery of every participant can lag the first command on a loaded machine
        nodes = ros2(env, 'node', 'list', '--no-daemon', '--spin-time', '5')
        missing = [n for n in want if n not in nodes.split()]
        if not missing or time.monotonic() > end:
            break
        deployment.check_alive()
        time.sleep(2.0)
    assert not missing, f'{missing} not in:\n{nodes}'
    # launch arguments reach the processes as parameters (placement: control_cpus, safety_priority)
    out = ros2(env, 'param', 'get', f'/{NS}/safety_node', 'rt.control.priority')
    assert 'Integer value is: 82' in out, out
    out = ros2(env, 'param', 'get', f'/{NS}/policy_node', 'rt.control.cpus')
    assert f'value is: {max(os.sched_getaffinity(0))}' in out, out
    # the remapped, absolute command topic carries the commands (the listener got them)
    assert deployment.commands and deployment.commands[-1][1].shape == (7,)


def _statuses(text: str) -> dict[str, str]:
    """'name' -> its block of ``ros2 topic echo`` YAML output, one entry per DiagnosticStatus."""
    out = {}
    for block in text.split('- level: ')[1:]:
        m = re.search(r"name: '?([^'\n]+)'?", block)
        if m:
            out[m.group(1)] = block
    return out


def test_diagnostics_show_the_other_processes_live(deployment: Deployment) -> None:
    want = ('monitor: control loop', 'monitor: policy', 'monitor: safety filter')
    end = time.monotonic() + START_TIMEOUT_S
    last = ''
    while time.monotonic() < end:
        last = ros2(
            deployment.env, 'topic', 'echo', '--once', '/diagnostics', 'diagnostic_msgs/msg/DiagnosticArray'
        )
        st = _statuses(last)
        live = [n for n in want if n in st and not st[n].startswith('"\\x03"') and 'p50 (us)' in st[n]]
        if len(live) == len(want):
            break
        deployment.check_alive()
    else:
        raise AssertionError(f'/diagnostics never showed {want} live; last:\n{last}')
    assert 'source' in st['monitor: control loop'] and 'sim_robot (' in st['monitor: control loop']
    assert 'policy_node (' in st['monitor: policy'] and 'safety_node (' in st['monitor: safety filter']


def _max_speed_ratio(cmds: list[tuple[float, np.ndarray]], v_max: np.ndarray, span_s: float) -> float:
    """max over joints and pairs ~span_s apart of |dq| / (v_max * (dt + 0.1 s slack for delivery))."""
    worst = 0.0
    j = 0
    for i in range(len(cmds)):
        while j < len(cmds) and cmds[j][0] - cmds[i][0] < span_s:
            j += 1
        if j >= len(cmds):
            break
        dt = cmds[j][0] - cmds[i][0]
        worst = max(worst, float(np.max(np.abs(cmds[j][1] - cmds[i][1]) / (v_max * (dt + 0.1)))))
    return worst


def test_param_set_of_a_safety_limit_is_applied_and_an_invalid_one_refused(deployment: Deployment) -> None:
    from rt_safe_rl.config import load_config
    from rt_safe_rl.core.robot_model import RobotModel

    env = deployment.env
    node = f'/{NS}/safety_node'
    out = ros2(env, 'param', 'set', node, 'safety.velocity_scale', '-1.0')
    assert 'Setting parameter failed' in out and 'velocity_scale' in out, out
    out = ros2(env, 'param', 'set', node, 'config_file', '/tmp/other.yaml')
    assert 'Setting parameter failed' in out, out  # read-only
    v_max = RobotModel.from_config(load_config().robot).v_max
    before = _max_speed_ratio(deployment.commands_between(0.0, time.monotonic()), v_max, 0.5)
    out = ros2(env, 'param', 'set', node, 'safety.velocity_scale', '0.05')
    assert 'Set parameter successful' in out, out
    t0 = time.monotonic() + 1.0  # commands in flight before the set
    try:
        time.sleep(6.0)
        after = deployment.commands_between(t0, time.monotonic())
        assert len(after) >= 2, f'no command stream after the set ({len(after)} commands)'
        ratio = _max_speed_ratio(after, v_max, 0.5)
        assert ratio <= 0.05 * 1.05, (
            f'commands move faster than 0.05 x v_max: {ratio:.3f} (before: {before:.3f})'
        )
        out = ros2(env, 'param', 'get', node, 'safety.velocity_scale')
        assert 'Double value is: 0.05' in out, out
    finally:
        ros2(env, 'param', 'set', node, 'safety.velocity_scale', '1.0')


def test_lifecycle_deactivate_stops_commands_and_activate_resumes_them(deployment: Deployment) -> None:
    env = deployment.env
    node = f'/{NS}/safety_node'
    out = ros2(env, 'lifecycle', 'set', node, 'deactivate')
    assert 'Transitioning successful' in out, out
    time.sleep(2.0)  # commands already in flight
    quiet_from = time.monotonic()
    try:
        assert not deployment.wait_commands(quiet_from, 3.0), 'commands kept coming after deactivate'
        assert 'inactive' in ros2(env, 'lifecycle', 'get', node)
    finally:
        out = ros2(env, 'lifecycle', 'set', node, 'activate')
    assert 'Transitioning successful' in out, out
    assert deployment.wait_commands(time.monotonic(), 120.0), 'commands did not resume after activate'


def test_reset_service_answers_with_a_reason(deployment: Deployment) -> None:
    out = ros2(deployment.env, 'service', 'call', f'/{NS}/safety_node/reset', 'std_srvs/srv/Trigger')
    assert 'response:' in out and 'success=' in out and "message='" in out, out
