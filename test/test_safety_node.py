"""SafetyFilterNode over real DDS in one process (RtExecutor): hold until the policy speaks,
filter DDS / in-process actions, latch on a silent policy and reset over the service, validated
live parameters (over the SetParameters service, as ``ros2 param set`` does), status topic."""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.ros

RELAXED = {
    'safety': {'state_timeout_s': 0.5, 'action_timeout_s': 0.15, 'deadline_s': 0.5, 'max_step_gap_s': 1.0}
}
# Over real DDS on a loaded 2-core machine an action can arrive > 150 ms late and re-latch
# ACTION_TIMEOUT mid-test; the timing faults themselves are tested with a fake clock below.
# the peer publishes from the test's thread, which a loaded machine stalls for a few 100 ms at times
DDS_RELAXED = {
    'safety': {
        'state_timeout_s': 1.0,
        'action_timeout_s': 1.0,
        'deadline_s': 1.0,
        'max_step_gap_s': 1.0,
        'ssm': {'human_timeout_s': 1.0},
    }
}


def _wait(pred: Any, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return bool(pred())


def _stamp_of(seq: int) -> int:
    """The header stamp [ns] the test robot gives its state `seq` (1 kHz from t = 1 s)."""
    return 1_000_000_000 + seq * 1_000_000


def _seq_of(msg: Any) -> int:
    """The robot period a command on ``safety/joint_command`` answers, from its stamp."""
    from rt_safe_rl.nodes.msgs import stamp_ns_of

    return round((stamp_ns_of(msg) - 1_000_000_000) / 1_000_000)


class Rig:
    """Safety node + a peer node playing robot (joint_states), policy (actions) and human."""

    def __init__(self, ctx: Any, ns: str, intra: bool = False) -> None:
        from geometry_msgs.msg import PointStamped
        from rclpy.lifecycle import TransitionCallbackReturn
        from rclpy.node import Node
        from sensor_msgs.msg import JointState

        from rt_safe_rl.config import load_config
        from rt_safe_rl.nodes.safety_node import SafetyFilterNode
        from rt_safe_rl.rt.executor import RtExecutor

        self.app = load_config(None, DDS_RELAXED)
        self.node = SafetyFilterNode(config=self.app, namespace=ns, intra_process=intra, context=ctx)
        assert self.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert self.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert self.node.model is not None
        self.model: Any = self.node.model
        self.peer = Node('peer', namespace=ns, context=ctx)
        self.cmds: list[tuple[int, np.ndarray]] = []
        self.status: list[Any] = []
        self.peer.create_subscription(  # the command stream stamped with the state it answers
            JointState,
            'safety/joint_command',
            lambda m: self.cmds.append((_seq_of(m), np.array(m.position))),
            50,
        )
        from diagnostic_msgs.msg import DiagnosticStatus

        self.peer.create_subscription(DiagnosticStatus, 'safety/status', self.status.append, 10)
        self.js_pub = self.peer.create_publisher(JointState, 'joint_states', 10)
        self.act_pub = self.peer.create_publisher(JointState, 'policy/action', 10)
        self.hum_pub = self.peer.create_publisher(PointStamped, 'human/position', 10)
        self.ex = RtExecutor(self.app.rt, context=ctx)
        self.ex.add_node(self.node)
        self.ex.add_node(self.peer)
        self.th = threading.Thread(target=self.ex.spin, daemon=True)
        self.th.start()
        self.q = self.model.home()
        self.seq = 0
        self.human = np.array([2.0, 0.0, 0.5])

    def tick(self, target: np.ndarray | None = None, valid: bool = True) -> None:
        """One robot cycle: publish state (+ human), optionally an action for it; follow the command."""
        from geometry_msgs.msg import PointStamped
        from sensor_msgs.msg import JointState

        from rt_safe_rl.nodes.msgs import set_stamp

        self.seq += 1
        m = JointState()
        set_stamp(m, _stamp_of(self.seq))
        m.name = list(self.model.joint_names)
        m.position = [float(v) for v in self.q]
        m.velocity = [0.0] * len(self.q)
        self.js_pub.publish(m)
        h = PointStamped()
        h.point.x, h.point.y, h.point.z = (float(v) for v in self.human)
        self.hum_pub.publish(h)
        if target is not None:
            time.sleep(0.0005)
            a = JointState()
            set_stamp(a, _stamp_of(self.seq))  # the action names its state by the state's stamp
            a.name = list(self.model.joint_names)
            a.position = [float(v) if valid else math.nan for v in target]
            self.act_pub.publish(a)
        time.sleep(0.002)
        if self.cmds:
            self.q = self.cmds[-1][1].copy()

    def close(self) -> None:
        self.ex.shutdown()
        self.th.join(5.0)
        self.ex.destroy()
        self.node.destroy_node()
        self.peer.destroy_node()


def _check_commands(model: Any, cmds: list[tuple[int, np.ndarray]]) -> None:
    for _, c in cmds:
        assert np.all(np.isfinite(c))
        assert np.all(c >= model.q_min - 1e-9) and np.all(c <= model.q_max + 1e-9)
    # at most one control period of motion per command at v_max (commands of consecutive states)
    for (s0, c0), (s1, c1) in itertools.pairwise(cmds):
        if s1 == s0 + 1:
            assert np.all(np.abs(c1 - c0) <= model.v_max * 1e-3 * (1 + 1e-9) + 1e-12)


def test_hold_filter_latch_reset_over_dds(rclpy_context: Any) -> None:
    from std_srvs.srv import Trigger

    rig = Rig(rclpy_context, 'sn1')
    try:
        home = rig.model.home()
        for _ in range(40):
            rig.tick()
        # before any action: the monitor commands a hold at the measured state
        assert _wait(lambda: len(rig.cmds) > 5, 5.0)
        np.testing.assert_allclose(rig.cmds[-1][1], home, atol=1e-12)
        assert rig.node.status()['fault'] == 'AWAITING_POLICY'
        target = home + np.array([0.3, -0.2, 0.2, 0.2, 0.3, 0.2, 0.3])
        for _ in range(200):
            rig.tick(target)
        assert rig.node.status()['fault'] == 'OK', rig.node.status()
        assert np.linalg.norm(rig.q - home) > 0.01  # it moved toward the target ...
        _check_commands(rig.model, rig.cmds)  # ... within the limits
        seqs = [s for s, _ in rig.cmds[-50:]]
        assert max(seqs) <= rig.seq  # commands carry the seq of their state
        # the policy falls silent: latched ACTION_TIMEOUT, the monitor brakes and holds
        f = rig.node.filter
        assert f is not None
        end = time.monotonic() + 10.0
        while not (f.stop_latched and f.is_stopped) and time.monotonic() < end:
            rig.tick()  # the robot keeps publishing its state; the monitor brakes to a hold
        st = rig.node.status()
        assert st['latched'] and st['fault'] == 'ACTION_TIMEOUT', st
        assert f.is_stopped
        held = f.command_state[0].copy()
        time.sleep(0.3)  # commands published before the stop completed may still be in flight
        n = len(rig.cmds)
        for _ in range(10):
            rig.tick(target)  # actions again: still latched, still holding
        assert _wait(lambda: len(rig.cmds) > n, 3.0)
        assert all(np.array_equal(c, held) for _, c in rig.cmds[n:])
        # reset over the service
        cli: Any = rig.peer.create_client(Trigger, 'safety_node/reset')
        assert cli.wait_for_service(timeout_sec=5.0)
        for _attempt in range(5):
            rig.tick(target)  # fresh state and human data just before the call (discovery may take long)
            fut = cli.call_async(Trigger.Request())
            assert _wait(fut.done, 5.0)
            msg = fut.result().message
            if fut.result().success or 'old >' not in msg:
                break  # refused only for data that went stale while the loaded machine stalled
        assert fut.result().success, msg
        # The reset applies at the first state whose period has no command yet: this robot ticks
        # every 2.5 ms or more while its stamps say 1 ms, and the monitor braked at the declared
        # rate, so its braking commands may have run a few periods ahead of the robot's count
        # (10 at 12 ms ticks): tick until then (bounded), at least 100 ticks. (CI failed here twice
        # when a STALE_STATE flagged during a pause before the reset dropped it at that step:
        # test_safety_supervisor's ..._stale_state_that_is_fresh_again.)
        seq_at_reset = rig.seq
        last_cmd_at_reset = rig.node.status()['last_command_seq']
        t_prev, max_gap_s, n_ticks = time.monotonic(), 0.0, 0
        end = t_prev + 15.0
        while n_ticks < 100 or (rig.node.status()['latched'] and time.monotonic() < end):
            rig.tick(target)
            n_ticks += 1
            t_now = time.monotonic()
            max_gap_s, t_prev = max(max_gap_s, t_now - t_prev), t_now
        st = rig.node.status()
        assert not st['latched'] and st['fault'] == 'OK', (
            f'reset answered {msg!r}; robot seq {seq_at_reset} and last command label '
            f'{last_cmd_at_reset} at the reset, {n_ticks} ticks after it (gaps up to {max_gap_s:.3f} s); '
            f'status {json.dumps(st, default=str)}'
        )
        assert not np.array_equal(rig.cmds[-1][1], held)
        # a person steps close to the tool: SSM stop (not latched), reported on safety/status
        # (placed by the filter's own latest command, the configuration it checks: the peer's
        # copy of the command stream lags it on a loaded machine)
        q_cmd = np.zeros(rig.model.n_joints)
        rig.node.read_command(q_cmd)
        p = np.zeros((rig.model.n_points, 3))
        rig.model.fk_points(q_cmd, p)
        rig.human = p[rig.model.point_names.index('tcp')] + np.array([0.1, 0.0, 0.0])
        # (ticks until the node has taken the new human point: on a loaded machine its thread may
        # not run for a few 100 ms; that the stop comes in time in wall-clock terms is test_e2e's)
        end = time.monotonic() + 10.0
        n_ticks = 0
        while n_ticks < 60 or ('ssm_stop' not in rig.node.status()['active'] and time.monotonic() < end):
            rig.tick(target)
            n_ticks += 1
        st = rig.node.status()
        why = {k: st.get(k) for k in ('active', 'fault', 'latched', 'human_distance_m', 'ssm_margin_m')}
        assert 'ssm_stop' in st['active'] and not st['latched'], (why, n_ticks, rig.human, q_cmd)
        assert _wait(lambda: any('ssm_stop' in s.message for s in rig.status), 3.0)
        _check_commands(rig.model, rig.cmds)
        # SIGTERM's controlled stop is final: no reset clears it while the node goes down
        rig.node.controlled_stop('SIGTERM')
        end = time.monotonic() + 10.0
        while not (f.stop_latched and f.is_stopped) and time.monotonic() < end:
            rig.tick(target)
        ok, why = rig.node.reset_filter()
        assert not ok and 'the node is stopping (SIGTERM)' in why, why
        assert rig.node.status()['fault'] == 'CONTROLLED_STOP'
    finally:
        rig.close()


def test_parameters_validated_and_applied_over_the_service(rclpy_context: Any) -> None:
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    rig = Rig(rclpy_context, 'sn2')
    try:
        cli: Any = rig.peer.create_client(SetParameters, 'safety_node/set_parameters')
        assert cli.wait_for_service(timeout_sec=5.0)

        def set_param(name: str, value: Any) -> Any:
            pv = ParameterValue()
            if isinstance(value, bool):
                pv.type, pv.bool_value = ParameterType.PARAMETER_BOOL, value
            elif isinstance(value, float):
                pv.type, pv.double_value = ParameterType.PARAMETER_DOUBLE, value
            else:
                pv.type, pv.double_array_value = ParameterType.PARAMETER_DOUBLE_ARRAY, list(value)
            req = SetParameters.Request(parameters=[Parameter(name=name, value=pv)])
            fut = cli.call_async(req)
            assert _wait(fut.done, 5.0)
            return fut.result().results[0]

        r = set_param('safety.v_max_rad_s', [-1.0] * 7)
        assert not r.successful and 'must be > 0' in r.reason
        r = set_param('safety.ssm.reaction_time_s', math.nan)
        assert not r.successful and 'NaN' in r.reason
        r = set_param('safety.q_min_rad', [1.0] * 7)
        assert not r.successful  # lower > upper (q_max from the robot) / looser than the robot
        r = set_param('safety.v_max_rad_s', [5.0] * 7)
        assert not r.successful and 'looser' in r.reason
        r = set_param('safety.rate_hz', 500.0)
        assert not r.successful  # read-only
        assert rig.node.current_config().velocity_scale == 1.0
        r = set_param('safety.velocity_scale', 0.25)
        assert r.successful, r.reason
        r = set_param('safety.ssm.reaction_time_s', 0.2)
        assert r.successful, r.reason
        home = rig.model.home()
        for _ in range(150):
            rig.tick(home + 1.0)
        f = rig.node.filter
        assert f is not None and f.cfg.velocity_scale == 0.25 and f.cfg.ssm.reaction_time_s == 0.2
        assert np.all(np.abs(f.command_state[1]) <= 0.25 * rig.model.v_max + 1e-12)
        r = set_param('safety.reset', True)
        assert r.successful  # not latched: accepted (re-synchronises)
    finally:
        rig.close()


def test_intra_process_channel_and_direct_calls(rclpy_context: Any) -> None:
    """Composed mode: the action arrives over the in-process channel; process_state /
    process_action / read_command work as direct calls (how benchmarks drive the node)."""
    from rclpy.lifecycle import TransitionCallbackReturn

    from rt_safe_rl.config import load_config
    from rt_safe_rl.nodes.safety_node import ACTION_HEADER, SafetyFilterNode
    from rt_safe_rl.rt.channel import get_channel

    app = load_config(None, RELAXED)
    node = SafetyFilterNode(config=app, namespace='sn3', intra_process=True, context=rclpy_context)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        model = node.model
        assert model is not None
        ch = get_channel(node.resolve_topic_name('policy/action'), 7 + ACTION_HEADER)
        assert node.action_channel is ch
        q = model.home()
        out = np.zeros(7)
        assert node.read_command(out) == -1
        node.set_human(time.monotonic_ns(), np.array([2.0, 0.0, 0.5]))
        row = np.zeros(7 + ACTION_HEADER)
        for seq in range(1, 200):
            t = time.monotonic_ns()
            node.process_state(t, seq, q, np.zeros(7))
            row[0], row[1] = seq, 1.0
            row[ACTION_HEADER:] = model.home() + 0.2
            ch_seq = ch.try_write(row, t)
            node.process_action(ch_seq)
            assert node.read_command(out) == seq
            q = out.copy()
        assert node.filter is not None and node.filter.report.fault_code == 0
        assert np.linalg.norm(q - model.home()) > 0.05
        cmd_ch = node.command_channel
        buf = np.zeros(8)
        s, _ = cmd_ch.try_read(buf)
        assert s > 0 and buf[0] == 199 and np.array_equal(buf[1:], q)
        # invalid action -> latched stop
        row[0], row[1] = 200, 0.0
        node.process_state(time.monotonic_ns(), 200, q, np.zeros(7))
        node.process_action(ch.try_write(row, time.monotonic_ns()))
        assert node.filter.stop_latched and node.status()['fault'] == 'POLICY_INVALID'
        node.reset_for_replay()
        assert not node.filter.stop_latched
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    finally:
        node.destroy_node()


def test_configure_fails_cleanly_on_bad_safety_config(rclpy_context: Any) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn

    from rt_safe_rl.config import load_config
    from rt_safe_rl.nodes.safety_node import SafetyFilterNode

    app = load_config(None, {'safety': {'v_max_rad_s': [9.0] * 7}})  # looser than the URDF
    node = SafetyFilterNode(config=app, namespace='sn4', context=rclpy_context)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert 'looser' in node.last_error
    finally:
        node.destroy_node()


def test_callbacks_map_joint_names_human_poses_operator_and_trajectory(rclpy_context: Any) -> None:
    """Message glue, called directly: joint_states in another joint order, a PoseArray of human
    points, an operator command, an action over the DDS path, and the optional JointTrajectory."""
    from geometry_msgs.msg import Pose, PoseArray
    from rclpy.lifecycle import TransitionCallbackReturn
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from rt_safe_rl.config import load_config
    from rt_safe_rl.nodes.msgs import set_stamp
    from rt_safe_rl.nodes.safety_node import SafetyFilterNode

    cfg = dict(RELAXED['safety'], publish_trajectory=True)
    app = load_config(None, {'safety': cfg})
    node = SafetyFilterNode(config=app, namespace='sn5', context=rclpy_context)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        model = node.model
        assert model is not None
        q = model.home()
        order = list(reversed(range(7)))
        js = JointState()
        set_stamp(js, 5_000_000_000)  # ROS 2 headers have no seq: the node counts states (0, 1, ...)
        js.name = [model.joint_names[i] for i in order]
        js.position = [float(q[i]) for i in order]
        js.velocity = [0.0] * 7
        node._on_joint_state(js)
        np.testing.assert_array_equal(node.supervisor.measured_q, q)  # mapped back to the robot's order
        pa = PoseArray()
        for x in (2.0, 2.5):
            p = Pose()
            p.position.x, p.position.z = x, 0.5
            pa.poses.append(p)
        node._on_human_poses(pa)
        assert node.supervisor.human_points.shape == (2, 3)
        op = Float64MultiArray()
        op.data = [float(v) for v in q]
        node._on_operator(op)
        act = JointState()
        set_stamp(act, 5_000_000_000)  # the action names its state by that state's stamp
        act.name = list(model.joint_names)
        act.position = [float(v) for v in q + 0.001]
        node._on_action(act)
        out = np.zeros(7)
        assert node.read_command(out) == 0
        assert node.filter is not None and node.filter.report.fault_code == 0
        assert node.filter.report.human_distance_m < 2.0  # the PoseArray points were used
        np.testing.assert_array_equal(np.asarray(node.command_out._traj_msg.points[0].positions), out)
        # a joint_states without the robot's joints fails closed
        bad = JointState()
        bad.name = ['a', 'b']
        bad.position = [0.0, 0.0]
        set_stamp(bad, 5_001_000_000)
        node._on_joint_state(bad)
        assert np.all(np.isnan(node.supervisor.measured_q)) and 'do not contain' in node.last_error
        assert node.supervisor.state_seq == 1
        set_stamp(act, 5_001_000_000)
        node._on_action(act)
        assert node.filter.stop_latched and node.status()['fault'] == 'NONFINITE_INPUT', node.status()
    finally:
        node.destroy_node()


def test_startup_parameter_overrides_apply_and_bad_ones_are_rejected(rclpy_context: Any) -> None:
    from rt_safe_rl.config import load_config
    from rt_safe_rl.core.errors import ConfigError
    from rt_safe_rl.nodes.safety_node import SafetyFilterNode

    app = load_config(None)
    node = SafetyFilterNode(
        config=app,
        namespace='sn6',
        context=rclpy_context,
        cli_args=[
            '--ros-args',
            '-p',
            'safety.velocity_scale:=0.5',
            '-p',
            'safety.v_max_rad_s:=[1.0,1.0,1.0,1.0,1.0,1.0,1.0]',
        ],
    )
    try:
        cfg = node.current_config()
        assert cfg.velocity_scale == 0.5 and cfg.v_max_rad_s == [1.0] * 7
    finally:
        node.destroy_node()
    with pytest.raises(ConfigError, match='velocity_scale'):
        SafetyFilterNode(
            config=app,
            namespace='sn7',
            context=rclpy_context,
            cli_args=['--ros-args', '-p', 'safety.velocity_scale:=2.0'],
        )


class _Clock:
    """Fake monotonic clock for the node (ns); advanced by the test."""

    def __init__(self) -> None:
        self.t_ns = 10_000_000_000

    def __call__(self) -> int:
        return self.t_ns


class _Recorder:
    """Wraps the supervisor's emit: keeps (state seq, command) of every command sent, in order."""

    def __init__(self, emit: Any) -> None:
        self.cmds: list[tuple[int, np.ndarray]] = []
        self._emit = emit

    def __call__(self, cmd: np.ndarray, seq: int, t_ns: int, repeat: bool) -> None:
        self._emit(cmd, seq, t_ns, repeat)
        self.cmds.append((seq, cmd.copy()))


def _direct_node(ctx: Any, ns: str, monkeypatch: Any) -> tuple[Any, Any, _Clock, _Recorder]:
    """Configured + active intra-process node driven by direct calls, on a fake clock, with the
    published commands recorded (no executor: the test plays both threads)."""
    from rclpy.lifecycle import TransitionCallbackReturn

    from rt_safe_rl.config import load_config
    from rt_safe_rl.nodes import safety_node as sn
    from rt_safe_rl.rt.channel import get_channel

    clock = _Clock()
    monkeypatch.setattr(sn, '_mono', clock)
    app = load_config(None, RELAXED)
    node = sn.SafetyFilterNode(config=app, namespace=ns, intra_process=True, context=ctx)
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    rec = _Recorder(node.supervisor.emit)
    node.supervisor.emit = rec
    ch = get_channel(node.resolve_topic_name('policy/action'), 7 + sn.ACTION_HEADER)
    return node, ch, clock, rec


def _audit(node: Any, cmds: list[tuple[int, np.ndarray]]) -> Any:
    """The sim robot's audit (1 kHz robot period) over the recorded command stream."""
    from rt_safe_rl.sim.arm import ArmLimits, CommandAudit

    app = node.app
    audit = CommandAudit(ArmLimits.from_model(node.model, app.sim.robot), app.control.period_ns * 1e-9)
    for seq, c in cmds:
        audit.check(seq, c)
    return audit


def _drive(node: Any, ch: Any, clock: _Clock, seqs: range, target: np.ndarray, q: np.ndarray) -> np.ndarray:
    """One robot period per seq: state, then the policy's action for it; the robot follows."""
    from rt_safe_rl.nodes.safety_node import ACTION_HEADER

    row = np.zeros(7 + ACTION_HEADER)
    out = np.zeros(7)
    for seq in seqs:
        clock.t_ns += 1_000_000
        pts = node.supervisor.human_points
        if pts.shape[0]:  # the person stays where they are: fresh samples
            node.set_human(clock.t_ns, pts)
        node.process_state(clock.t_ns, seq, q, np.zeros(7))
        row[0], row[1] = seq, 1.0
        row[ACTION_HEADER:] = target
        node.process_action(ch.try_write(row, clock.t_ns))
        if node.read_command(out) >= 0:
            q = out.copy()
    return q


def test_monitor_braking_while_the_chain_stalls_keeps_one_step_per_robot_period(
    rclpy_context: Any, monkeypatch: Any
) -> None:
    """The control thread stalls mid-motion (no states, no actions reach the node) while the robot
    keeps running: the monitor brakes at the robot's rate; when the queued states and actions come
    back, the command stream seen by the robot still has one filter step per robot period (the
    robot's own audit finds no velocity / acceleration violation, seqs strictly increase)."""
    node, ch, clock, rec = _direct_node(rclpy_context, 'sn8', monkeypatch)
    try:
        node.set_human(clock.t_ns, np.array([2.0, 0.0, 0.5]))
        home = node.model.home()
        q = _drive(node, ch, clock, range(1, 301), home + 1.0, home)
        assert float(np.abs(node.filter.command_state[1]).max()) > 0.2  # moving
        for _ in range(400):  # 200 ms stall at the monitor's 2 kHz
            clock.t_ns += 500_000
            node.set_human(clock.t_ns, np.array([2.0, 0.0, 0.5]))
            node._monitor(clock.t_ns)
        assert node.monitor_publishes > 0 and node.filter.stop_latched
        _drive(node, ch, clock, range(301, 600), home + 1.0, q)  # the backlog, then live again
        seqs = [s for s, _ in rec.cmds]
        assert all(b > a for a, b in itertools.pairwise(seqs)), 'two commands for one robot period'
        audit = _audit(node, rec.cmds)
        assert audit.violations == 0, audit.summary()
        assert node.skipped_actions > 0  # the backlog's periods were covered by the monitor
    finally:
        node.destroy_node()


def test_monitor_racing_the_first_action_neither_steps_twice_nor_goes_back_in_time(
    rclpy_context: Any, monkeypatch: Any
) -> None:
    """The monitor (holding before the first action) runs between process_action's start and its
    filter step: the step must not see time going backwards (no CLOCK_JUMP latch), the period the
    monitor covered is not stepped again, and the robot starts moving on the next action."""
    node, ch, clock, rec = _direct_node(rclpy_context, 'sn9', monkeypatch)
    try:
        from rt_safe_rl.nodes.safety_node import ACTION_HEADER

        node.set_human(clock.t_ns, np.array([2.0, 0.0, 0.5]))
        home = node.model.home()
        fired: list[bool] = []

        class PreemptingClock(_Clock):
            """The first reading in process_action returns, then the monitor runs 0.3 ms later
            before process_action continues (what a higher-priority thread does)."""

            def __call__(self) -> int:
                t = self.t_ns
                if armed and not fired:
                    fired.append(True)
                    self.t_ns += 300_000
                    node._monitor(self.t_ns)
                return t

        pclock = PreemptingClock()
        pclock.t_ns = clock.t_ns
        monkeypatch.setattr('rt_safe_rl.nodes.safety_node._mono', pclock)
        armed = False
        pclock.t_ns += 1_000_000
        node.process_state(pclock.t_ns, 1, home, np.zeros(7))
        row = np.zeros(7 + ACTION_HEADER)
        row[0], row[1] = 1, 1.0
        row[ACTION_HEADER:] = home + 0.5
        ch_seq = ch.try_write(row, pclock.t_ns)
        armed = True
        node.process_action(ch_seq)
        armed = False
        _drive(node, ch, pclock, range(2, 200), home + 0.5, home)
        assert fired and node.monitor_publishes >= 1
        st = node.status()
        assert not st['latched'] and st['fault'] == 'OK', st
        seqs = [s for s, _ in rec.cmds]
        assert all(b > a for a, b in itertools.pairwise(seqs))
        assert _audit(node, rec.cmds).violations == 0
        assert np.linalg.norm(rec.cmds[-1][1] - home) > 0.01
    finally:
        node.destroy_node()


def test_configure_rejects_a_safety_rate_other_than_the_robot_rate(rclpy_context: Any) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn

    from rt_safe_rl.config import load_config
    from rt_safe_rl.nodes.safety_node import SafetyFilterNode

    app = load_config(None, {'safety': {'rate_hz': 500.0}})
    node = SafetyFilterNode(config=app, namespace='sn10', context=rclpy_context)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert 'control.rate_hz' in node.last_error
    finally:
        node.destroy_node()


def test_intervention_counter_counts_safety_changes_and_stops_not_joint_rate_limits(
    rclpy_context: Any, monkeypatch: Any
) -> None:
    """A position target far beyond one step is rate-limited every cycle by the joint limits:
    not an intervention (intervention_rad is large all the same). A person close enough for SSM
    to slow the robot, and a stop, are; the threshold is a validated, live parameter."""
    from rcl_interfaces.msg import SetParametersResult

    from rt_safe_rl.rt.metrics import registry

    node, ch, clock, _rec = _direct_node(rclpy_context, 'sn11', monkeypatch)
    counter = registry().counter('safety_interventions')
    try:
        home = node.model.home()
        far_human = np.array([2.5, 0.0, 0.5])
        node.set_human(clock.t_ns, far_human)
        q = _drive(node, ch, clock, range(1, 21), home, home)  # first valid action: hold -> run
        c0 = counter.value
        goal = home + np.array([0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        q = _drive(node, ch, clock, range(21, 221), goal, q)
        rep = node.filter.report
        assert rep.intervention_rad > 0.1 and not rep.stopping  # far target, joint limits bind
        assert counter.value - c0 == 0, counter.value - c0
        # the person steps in front of the moving tool: SSM slows (then stops) the robot
        p = np.zeros((node.model.n_points, 3))
        node.model.fk_points(q, p)
        tcp = p[node.model.point_names.index('tcp')]
        c1 = counter.value
        seen = 0.0
        for k in range(221, 321):
            node.set_human(clock.t_ns, tcp + np.array([0.0, 0.55, 0.0]))
            q = _drive(node, ch, clock, range(k, k + 1), goal, q)
            seen = max(seen, node.filter.report.safety_intervention_rad)
        assert seen > 1e-6 and counter.value - c1 > 10, (seen, counter.value - c1)
        # validated and live-tunable
        bad = node._on_set_parameters([_param('safety.intervention_threshold_rad', -1.0)])
        assert isinstance(bad, SetParametersResult) and not bad.successful
        node.set_parameters([_param('safety.intervention_threshold_rad', 0.5)])
        assert node.current_config().intervention_threshold_rad == 0.5
    finally:
        node.destroy_node()


def _param(name: str, value: float) -> Any:
    from rclpy.parameter import Parameter

    return Parameter(name, Parameter.Type.DOUBLE, value)


def test_reset_tells_the_truth_and_the_reset_parameter_falls_back(
    rclpy_context: Any, monkeypatch: Any
) -> None:
    """Nothing latched: a no-op that says so. Latched with a stale state: refused with the ages.
    ``safety.reset`` (the parameter) is false again once acted upon."""
    from rclpy.parameter import Parameter

    node, ch, clock, rec = _direct_node(rclpy_context, 'sn12', monkeypatch)
    try:
        home = node.model.home()
        node.set_human(clock.t_ns, np.array([2.0, 0.0, 0.5]))
        q = _drive(node, ch, clock, range(1, 50), home + 0.2, home)
        ok, why = node.reset_filter()
        assert ok and 'no-op' in why, why
        node.filter.trigger_stop()
        q = _drive(node, ch, clock, range(50, 700), home + 0.2, q)
        assert node.filter.stop_latched and node.filter.is_stopped
        clock.t_ns += 1_200_000_000  # the robot falls silent for 1.2 s
        ok, why = node.reset_filter()
        assert not ok and 'state is 1200 ms old > state_timeout_s 500 ms' in why, why
        r = node.set_parameters([Parameter('safety.reset', Parameter.Type.BOOL, True)])[0]
        assert not r.successful and 'state is' in r.reason
        assert node.get_parameter('safety.reset').value is False
        node.set_human(clock.t_ns, np.array([2.0, 0.0, 0.5]))
        q = _drive(node, ch, clock, range(700, 702), home + 0.2, q)  # fresh states again
        r = node.set_parameters([Parameter('safety.reset', Parameter.Type.BOOL, True)])[0]
        assert r.successful, r.reason
        assert node.get_parameter('safety.reset').value is False  # momentary: back to false
        q = _drive(node, ch, clock, range(702, 800), home + 0.2, q)
        assert not node.filter.stop_latched
        assert _audit(node, rec.cmds).violations == 0
        assert node.status()['guard_violations'] == 0
    finally:
        node.destroy_node()


def test_live_tuning_only_tightens_while_active(rclpy_context: Any, monkeypatch: Any) -> None:
    """Issue 11 item 5: ``safety.ssm.enabled=false`` was accepted live. While ACTIVE a loosening is
    refused with the reason (and changes nothing); a tightening applies; while inactive both apply."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    node, _ch, _clock, _rec = _direct_node(rclpy_context, 'sn13', monkeypatch)
    try:

        def set_(name: str, value: Any) -> Any:
            p = Parameter(name, value=value)
            return node.set_parameters([p])[0]

        for name, value, what in (
            ('safety.ssm.enabled', False, 'ssm.enabled true -> false'),
            ('safety.ssm.reaction_time_s', 0.05, 'ssm.reaction_time_s 0.1 -> 0.05'),
            ('safety.state_timeout_s', 2.0, 'state_timeout_s'),
            ('safety.workspace.enabled', False, 'workspace.enabled'),
        ):
            r = set_(name, value)
            assert not r.successful and 'refused while active' in r.reason and what in r.reason, r.reason
        assert node.current_config().ssm.enabled and node.get_parameter('safety.ssm.enabled').value is True
        r = set_('safety.velocity_scale', 0.5)
        assert r.successful, r.reason  # tighter: applies while active
        r = set_('safety.velocity_scale', 0.8)
        assert not r.successful and 'v_max_rad_s' in r.reason
        r = set_('safety.ssm.reaction_time_s', 0.3)
        assert r.successful, r.reason
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        r = set_('safety.ssm.enabled', False)
        assert r.successful, r.reason  # inactive: loosening allowed
        r = set_('safety.velocity_scale', 1.0)
        assert r.successful, r.reason
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert not node.current_config().ssm.enabled and node.current_config().velocity_scale == 1.0
    finally:
        node.destroy_node()


def test_a_second_publisher_on_joint_states_fails_closed_naming_both(rclpy_context: Any) -> None:
    """Issue 11 item 4: a second joint_states publisher was accepted for 3 s without a warning."""
    from rclpy.node import Node
    from sensor_msgs.msg import JointState

    rig = Rig(rclpy_context, 'sn14')
    intruder = Node('intruder', namespace='sn14', context=rclpy_context)
    try:
        intruder.create_publisher(JointState, 'joint_states', 10)
        for _ in range(20):
            rig.tick()
        detail = ''
        end = time.monotonic() + 10.0
        while not detail and time.monotonic() < end:  # DDS discovery
            detail = rig.node.check_publishers()
            time.sleep(0.05)
        assert '/sn14/peer' in detail and '/sn14/intruder' in detail and 'joint_states' in detail, detail
        end = time.monotonic() + 10.0
        while not rig.node.status()['latched'] and time.monotonic() < end:
            rig.tick()  # (the executor's threads may still be starting)
        st = rig.node.status()
        assert st['latched'] and st['fault'] == 'COMPETING_PUBLISHER' and 'intruder' in st['fault_detail'], st
        end = time.monotonic() + 10.0
        while not rig.node.filter.is_stopped and time.monotonic() < end:
            rig.tick()
        ok, why = rig.node.reset_filter()  # the intruder is still there: refused, naming it
        assert not ok and 'reset refused' in why and '/sn14/intruder' in why, why
    finally:
        intruder.destroy_node()
        rig.close()


def test_allowed_publishers_and_missing_velocity_rules(rclpy_context: Any) -> None:
    """Allow-list: listed publishers pass, an unlisted one fails closed. A joint state without a
    velocity: estimated by finite differences (never 0), or a latched stop with ``fail``."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.node import Node
    from sensor_msgs.msg import JointState

    from rt_safe_rl.config import load_config
    from rt_safe_rl.nodes.safety_node import SafetyFilterNode

    over = {
        'safety': dict(RELAXED['safety'], inputs={'allowed_publishers': ['/sn15/robot_a', '/sn15/robot_b']})
    }
    node = SafetyFilterNode(config=load_config(None, over), namespace='sn15', context=rclpy_context)
    a = Node('robot_a', namespace='sn15', context=rclpy_context)
    b = Node('robot_b', namespace='sn15', context=rclpy_context)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        a.create_publisher(JointState, 'joint_states', 10)
        b.create_publisher(JointState, 'joint_states', 10)
        time.sleep(0.5)
        assert node.check_publishers() == ''
        # velocity estimated: positions moving at 0.1 rad/s on joint 0, stamps 1 ms apart
        model = node.model
        assert model is not None
        q = model.home()
        for k in range(3):
            js = JointState()
            js.header.frame_id = str(k + 1)
            js.header.stamp.sec, js.header.stamp.nanosec = 100, 1_000_000 * (k + 1)
            js.name = list(model.joint_names)
            js.position = [float(v) for v in q + np.array([1e-4 * k, 0, 0, 0, 0, 0, 0])]
            node._on_joint_state(js)
        st = node.status()
        assert st['velocity_estimated_states'] == 3
        c = Node('robot_c', namespace='sn15', context=rclpy_context)
        c.create_publisher(JointState, 'joint_states', 10)
        detail = ''
        end = time.monotonic() + 10.0
        while not detail and time.monotonic() < end:
            detail = node.check_publishers()
            time.sleep(0.05)
        assert 'robot_c' in detail and 'allowed_publishers' in detail, detail
        c.destroy_node()
    finally:
        a.destroy_node()
        b.destroy_node()
        node.destroy_node()


def test_joint_state_reader_estimates_a_missing_velocity() -> None:
    from sensor_msgs.msg import JointState

    from rt_safe_rl.nodes.msgs import JointStateReader

    r = JointStateReader(['a', 'b'], baseline_ns=1_000_000)
    for k, pos in enumerate(([0.0, 1.0], [0.001, 1.0], [0.003, 0.998])):
        js = JointState()
        js.header.stamp.nanosec = 1_000_000 * (k + 1)
        js.name = ['b', 'a']
        js.position = [pos[1], pos[0]]
        js.velocity = [0.0] if k == 2 else []  # missing, then wrong length
        r.read(js, 0)
        assert r.velocity_estimated and r.complete
        r.accept()
    np.testing.assert_allclose(r.dq, [2.0, -2.0])  # (0.003 - 0.001) / 1 ms, never silently 0
    assert r.estimated == 3
    js = JointState()
    js.name = ['a']
    js.position = [0.0]
    r.read(js, 0)
    assert not r.complete and np.all(np.isnan(r.q))  # the one fail-closed rule


def test_the_velocity_estimate_spans_several_periods_so_jitter_does_not_multiply_it() -> None:
    """A robot moving at 1 rad/s whose stamps jitter by +-0.4 ms around 1 kHz: differences of
    consecutive samples read up to 5x the speed (the campaign's js_missing_velocity case latched
    STATE_OUT_OF_LIMITS on such an estimate); over >= 4 periods the estimate stays near 1 rad/s."""
    from sensor_msgs.msg import JointState

    from rt_safe_rl.nodes.msgs import JointStateReader

    rng = np.random.default_rng(5)
    worst: dict[int, float] = {}
    for baseline_ns in (1, 4_000_000):
        r = JointStateReader(['a'], baseline_ns=baseline_ns)
        est = []
        for k in range(1, 400):
            js = JointState()
            js.header.stamp.nanosec = 1_000_000 * k + int(rng.integers(-400_000, 400_000))
            js.name = ['a']
            js.position = [1e-3 * k]  # 1 rad/s, sampled on the robot's own period
            r.read(js, 0)
            r.accept()
            if k > 10:
                est.append(float(r.dq[0]))
        worst[baseline_ns] = float(np.max(np.abs(np.array(est) - 1.0)))
    assert worst[1] > 1.0  # consecutive differences: off by more than the speed itself
    assert worst[4_000_000] < 0.3


def test_missing_velocity_fails_closed_when_configured(rclpy_context: Any) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn
    from sensor_msgs.msg import JointState

    from rt_safe_rl.config import load_config
    from rt_safe_rl.nodes.msgs import set_stamp
    from rt_safe_rl.nodes.safety_node import SafetyFilterNode

    over = {
        'safety': dict(RELAXED['safety'], inputs={'missing_velocity': 'fail'}, ssm={'require_human': False})
    }
    node = SafetyFilterNode(config=load_config(None, over), namespace='sn16', context=rclpy_context)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        model = node.model
        assert model is not None
        js = JointState()
        set_stamp(js, 3_000_000_000)
        js.name = list(model.joint_names)
        js.position = [float(v) for v in model.home()]
        node._on_joint_state(js)  # no velocity field
        act = JointState()
        set_stamp(act, 3_000_000_000)
        act.name = list(model.joint_names)
        act.position = js.position
        node._on_action(act)
        st = node.status()
        assert (
            st['latched']
            and st['fault'] == 'MISSING_VELOCITY'
            and 'missing_velocity: fail' in st['fault_detail']
        )
    finally:
        node.destroy_node()


def test_deactivate_while_moving_brakes_to_rest_first(rclpy_context: Any, monkeypatch: Any) -> None:
    """Deactivating used to stop the output mid-motion. Now the node brakes to rest within the
    limits first (the states have stopped here: it steps the braking itself), then goes quiet;
    activation clears that stop and the robot moves again."""
    from rclpy.lifecycle import TransitionCallbackReturn

    from rt_safe_rl.nodes import safety_node as sn

    node, ch, clock, rec = _direct_node(rclpy_context, 'sn16', monkeypatch)
    monkeypatch.setattr(sn, '_pause', lambda s: setattr(clock, 't_ns', clock.t_ns + int(s * 1e9)))
    try:
        home = node.model.home()
        node.set_human(clock.t_ns, np.array([2.0, 0.0, 0.5]))
        q = _drive(node, ch, clock, range(1, 300), home + 0.5, home)
        assert np.abs(node.filter.command_state[1]).max() > 0.2
        n = len(rec.cmds)
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert len(rec.cmds) > n and node.filter.is_stopped  # braked by the node itself
        np.testing.assert_array_equal(rec.cmds[-1][1], rec.cmds[-2][1])  # ends holding at rest
        assert _audit(node, rec.cmds).violations == 0
        q = rec.cmds[-1][1]
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        s0 = node.supervisor.last_command_seq + 1
        node.set_human(clock.t_ns, np.array([2.0, 0.0, 0.5]))
        q2 = _drive(node, ch, clock, range(s0, s0 + 300), home + 0.5, q)
        assert not node.filter.stop_latched and np.abs(q2 - q).max() > 0.05
        assert _audit(node, rec.cmds).violations == 0
    finally:
        node.destroy_node()


def test_a_refused_reset_changes_no_parameter(rclpy_context: Any, monkeypatch: Any) -> None:
    """A parameter set that asks for a reset and a tightening together, and whose reset is refused,
    changes nothing (it used to apply the new limits before the reset was refused)."""
    from rclpy.parameter import Parameter

    node, ch, clock, _rec = _direct_node(rclpy_context, 'sn17', monkeypatch)
    try:
        home = node.model.home()
        node.set_human(clock.t_ns, np.array([2.0, 0.0, 0.5]))
        q = _drive(node, ch, clock, range(1, 50), home + 0.2, home)
        node.filter.trigger_stop()
        _drive(node, ch, clock, range(50, 700), home + 0.2, q)
        clock.t_ns += 1_200_000_000  # stale state: a reset is refused
        before = node.current_config().velocity_scale
        r = node.set_parameters_atomically(
            [Parameter('safety.reset', Parameter.Type.BOOL, True), _param('safety.velocity_scale', 0.3)]
        )
        assert not r.successful and 'state is' in r.reason, r.reason
        assert node.current_config().velocity_scale == before
        assert node.supervisor.cfg.velocity_scale == before
    finally:
        node.destroy_node()


def test_state_stamps_match_commands_to_the_periods_they_answer() -> None:
    from rt_safe_rl.nodes.msgs import StateStamps

    st = StateStamps(1_000_000, ring=64)
    assert st.seq_of(5) == -1  # nothing recorded
    rng = np.random.default_rng(2)
    stamps = {}
    for seq in range(100, 200):
        stamps[seq] = 7_000_000_000 + seq * 1_000_000 + int(rng.integers(-300_000, 300_000))
        st.record(seq, stamps[seq])
    assert all(st.seq_of(stamps[s]) == s for s in range(140, 200))  # exact, off the period grid
    assert st.seq_of(stamps[199] + 3_000_000) == 202  # newer than every state: the period it is for
    assert st.seq_of(stamps[150] + 100_000) == 150  # extrapolated by the monitor: the nearest
    assert st.seq_of(1_000) == -1  # unknown and old


def test_state_stamps_name_a_period_the_robot_published_no_state_for() -> None:
    """A late robot integrates several periods and publishes one state; a command the safety
    monitor sent for a skipped period names that period, not -1 (it is not an unknown stamp)."""
    from rt_safe_rl.nodes.msgs import StateStamps

    st = StateStamps(1_000_000, ring=64)
    base = 3_000_000_000
    for seq in [*range(10, 20), *range(24, 30)]:  # periods 20..23 integrated without a state
        st.record(seq, base + seq * 1_000_000)
    assert [st.seq_of(base + s * 1_000_000) for s in range(19, 25)] == [19, 20, 21, 22, 23, 24]
    assert st.seq_of(base - 100 * 1_000_000) == -1  # before every recorded state


def test_state_stamps_take_the_first_state_of_a_reused_stamp() -> None:
    """A faulty driver re-uses an old stamp (the safety drops that state: not newer); a command
    answering the stamp belongs to the first state that had it."""
    from rt_safe_rl.nodes.msgs import StateStamps

    st = StateStamps(1_000_000)
    for seq in range(10, 30):
        st.record(seq, 5_000_000_000 + (seq - 7 if seq == 21 else seq) * 1_000_000)
    assert st.seq_of(5_000_000_000 + 14 * 1_000_000) == 14
