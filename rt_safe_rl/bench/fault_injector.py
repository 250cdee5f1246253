"""The fault injector of ``rt-safe-rl bench faults``: a robot driver and a person tracker in the
bench's own process (the system under test runs in another one), over DDS.

* robot: publishes ``joint_states`` at ``control.rate_hz`` (~1 kHz from a Python thread with
  absolute deadlines; slower on a loaded machine); the arm tracks the last command received (the
  loop is closed), no faster than v_max over the real time elapsed, as a position-controlled arm
  does; velocity = the motion since the previous state; ``header.stamp`` = the period's scheduled
  time on the ROS clock (system time),
  ``frame_id`` empty (no field is repurposed);
* person: ``human/position`` at 100 Hz; task goals on ``policy/command``;
* audit: every command on ``safety/joint_command`` (the safe command, stamped with the state it
  answers: :class:`~rt_safe_rl.nodes.msgs.StateStamps` gives the robot period) is checked on
  arrival against the URDF limits relative to the previous command with the sim robot's
  :class:`~rt_safe_rl.sim.arm.CommandAudit`, over the real elapsed time: the commands' periods
  count the periods between two commands, capped by the periods that really elapsed between
  their arrivals (+1 for arrival jitter), so a SUT that labels commands with injected,
  inflated seqs gets no extra room;
* observers: the safety node's ``safety/status`` (fault, latch, counters), ``~/reset`` and
  ``set_parameters`` clients, and a second publisher on ``joint_states`` (competing driver).

A case changes the injector's behaviour through :attr:`FaultInjector.state_hook` (rewrites or
drops each state message), ``human_xyz`` (None = silent), or direct calls. Not RT code.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rt_safe_rl.config import AppConfig
from rt_safe_rl.core.robot_model import RobotModel
from rt_safe_rl.nodes.msgs import StateStamps, set_stamp, stamp_ns_of
from rt_safe_rl.sim.arm import ArmLimits, CommandAudit

SAFETY_NODE = 'safety_node'
#: how far (robot periods) the commands' seqs may run ahead of the real elapsed time (arrival jitter)
JITTER_PERIODS = 10
#: SCHED_FIFO priority of the injector's threads (a robot driver is RT too; below the SUT's loop)
DRIVER_PRIORITY = 60
#: a state published more than this many periods after the previous one is logged in state_gaps
GAP_PERIODS = 10
StateHook = Callable[[Any, int], list[Any]]  # (JointState, seq) -> messages to publish instead


class FaultInjector:
    """Robot driver + person tracker + command audit (see the module docstring).

    Args:
        cfg: the app config the system under test runs (topics, limits, rate).
        model: the robot model (joint names, limits, home pose).
        context: an initialised rclpy context (the injector's own).
    """

    def __init__(self, cfg: AppConfig, model: RobotModel, context: Any) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticStatus
        from geometry_msgs.msg import PointStamped
        from rcl_interfaces.srv import SetParameters
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray
        from std_srvs.srv import Trigger

        self._JointState, self._PointStamped, self._F64 = JointState, PointStamped, Float64MultiArray
        self.cfg, self.model = cfg, model
        self.period_s = 1.0 / cfg.control.rate_hz
        t = cfg.topics
        self.node = rclpy.create_node('rt_safe_rl_fault_injector', context=context)
        self.rival = rclpy.create_node('rt_safe_rl_fault_rival', context=context)
        self._state_pub = self.node.create_publisher(JointState, t.joint_states, 10)
        self._rival_pub: Any = None  # created by the competing-driver case only, then destroyed
        self._human_pub = self.node.create_publisher(PointStamped, t.human_position, 10)
        self._goal_pub = self.node.create_publisher(Float64MultiArray, t.policy_command, 10)
        self._op_pub = self.node.create_publisher(Float64MultiArray, t.operator_command, 10)
        best_effort = QoSProfile(depth=1000, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.node.create_subscription(JointState, t.joint_command, self._on_command, best_effort)
        self.node.create_subscription(DiagnosticStatus, t.safety_status, self._on_status, 50)
        self._reset_cli: Any = self.node.create_client(Trigger, f'/{SAFETY_NODE}/reset')
        self._param_cli: Any = self.node.create_client(SetParameters, f'/{SAFETY_NODE}/set_parameters')
        self._Trigger, self._SetParameters = Trigger, SetParameters
        self._exec = SingleThreadedExecutor(context=context)
        self._exec.add_node(self.node)
        self._exec.add_node(self.rival)
        limits = ArmLimits.from_model(model, cfg.sim.robot)
        self.audit = CommandAudit(limits, self.period_s, tolerance=cfg.sim.robot.limit_tolerance)
        self._lock = threading.Lock()
        n = model.n_joints
        self.names = list(model.joint_names)
        self.home = model.home().astype(np.float64)
        self.q = self.home.copy()
        self.dq = np.zeros(n)
        self.target: np.ndarray | None = None  # the last finite command received
        self._v_max = np.asarray(model.v_max, dtype=np.float64)
        self._tick_ns = 0
        self.last_cmd: np.ndarray | None = None
        self.last_label = -1
        self._eff_seq = 0
        self._ref = (0, 0)
        self.label_clamps = 0  # commands whose seq ran ahead of the real elapsed time
        self._last_rx_ns = 0
        self.commands = 0
        self.cmd_log: list[tuple[int, float]] = []  # (arrival ns, max |step| / (v_max dt)) per command
        self.seq = 0
        #: (monotonic ns, gap ns) of each robot-loop period that ended more than GAP_PERIODS periods
        #: after the previous one (this process was late: a stale state the SUT then sees is ours)
        self.state_gaps: list[tuple[int, int]] = []
        self.stamps = StateStamps(round(self.period_s * 1e9))
        self._wall_offset_ns = time.time_ns() - time.monotonic_ns()
        self.state_hook: StateHook | None = None
        self.human_xyz: np.ndarray | None = np.array([2.5, 0.0, 0.6])
        self.goals = [self.home.copy(), self.home + np.array([0.6, 0.3, -0.5, 0.4, 0.5, -0.3, 0.6])[:n]]
        self.goal_period_s = 1.2
        self.goal_override: np.ndarray | None = None
        self.status: dict[str, str] = {}
        self.status_level = -1
        self.status_log: list[tuple[int, int, str, dict[str, str]]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._spin, name='fault_injector_spin', daemon=True),
            threading.Thread(target=self._robot_loop, name='fault_injector_robot', daemon=True),
        ]

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start spinning and publishing."""
        for th in self._threads:
            th.start()

    def close(self) -> None:
        """Stop the threads and destroy the nodes."""
        self._stop.set()
        for th in self._threads:
            th.join(2.0)
        self._exec.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.rival.destroy_node()

    def _spin(self) -> None:
        _try_fifo()
        while not self._stop.is_set():
            try:
                self._exec.spin_once(timeout_sec=0.05)
            except Exception:
                if self._stop.is_set():
                    return

    # ---------------------------------------------------------------- robot + person
    def make_state(self, seq: int, q: np.ndarray, dq: np.ndarray, stamp_ns: int = 0) -> Any:
        """A JointState for the robot's joints, stamped `stamp_ns` (0 = now; recorded as period
        `seq` when published)."""
        msg = self._JointState()
        set_stamp(msg, stamp_ns or self.node.get_clock().now().nanoseconds)
        msg.name = list(self.names)
        msg.position = [float(x) for x in q]
        msg.velocity = [float(x) for x in dq]
        msg.effort = []
        return msg

    def publish_rival(self, msg: Any) -> None:
        """Publish `msg` from the second (competing) node (its publisher is created at the first
        call: while it exists the SUT sees two publishers on joint_states)."""
        if self._rival_pub is None:
            self._rival_pub = self.rival.create_publisher(self._JointState, self.cfg.topics.joint_states, 10)
        self._rival_pub.publish(msg)

    def close_rival(self) -> None:
        """Destroy the competing publisher (end of the competing-driver case)."""
        if self._rival_pub is not None:
            self.rival.destroy_publisher(self._rival_pub)
            self._rival_pub = None

    def publish_operator(self, values: list[float]) -> None:
        """One operator command (any length, any values)."""
        m = self._F64()
        m.data = [float(v) for v in values]
        self._op_pub.publish(m)

    def _robot_loop(self) -> None:
        _try_fifo()
        period_ns = round(self.period_s * 1e9)
        next_ns = time.monotonic_ns()
        t0 = time.monotonic()
        k = 0
        last_pub_ns = 0
        while not self._stop.is_set():
            now = time.monotonic_ns()
            next_ns, skipped = next_period(next_ns, now, period_ns)
            self.seq += skipped
            if next_ns > now:
                time.sleep((next_ns - now) * 1e-9)
            with self._lock:
                q, dq = self._follow(next_ns)  # the state at the scheduled sample time
            self.seq += 1
            # stamped with the period's scheduled time (as a robot stamps its control cycle), on the
            # ROS clock (system time)
            msg = self.make_state(self.seq, q, dq, self._wall_offset_ns + next_ns)
            hook = self.state_hook
            for m in hook(msg, self.seq) if hook is not None else [msg]:
                with self._lock:
                    self.stamps.record(self.seq, stamp_ns_of(m))  # the stamp the SUT will answer
                self._state_pub.publish(m)
            t_pub = time.monotonic_ns()  # (with or without a publish: a case's hook may drop them)
            if last_pub_ns and t_pub - last_pub_ns > GAP_PERIODS * period_ns:
                self.state_gaps.append((t_pub, t_pub - last_pub_ns))
                if len(self.state_gaps) > 1000:
                    del self.state_gaps[:100]
            last_pub_ns = t_pub
            k += 1
            if k % 10 == 0:
                self._publish_person(time.monotonic() - t0)

    def _publish_person(self, t_s: float) -> None:
        xyz = self.human_xyz
        if xyz is not None:
            m = self._PointStamped()
            m.header.stamp = self.node.get_clock().now().to_msg()
            m.header.frame_id = 'base_link'
            m.point.x, m.point.y, m.point.z = (float(v) for v in xyz)
            self._human_pub.publish(m)
        goal = self.goal_override
        if goal is None:
            goal = self.goals[int(t_s / self.goal_period_s) % len(self.goals)]
        g = self._F64()
        g.data = [float(v) for v in goal]
        self._goal_pub.publish(g)

    # ---------------------------------------------------------------- audit
    def _on_command(self, msg: Any) -> None:
        now = time.monotonic_ns()
        c = np.asarray(msg.position, dtype=np.float64)
        with self._lock:
            label = self.stamps.seq_of(stamp_ns_of(msg))
            if c.shape != self.q.shape:
                self.audit.nonfinite += 1  # malformed command: counted as a violation
                self.audit.violation_log.append(('malformed', label, -1, -1, float(c.size)))
                return
            if not np.all(np.isfinite(c)):
                self.audit.violation_log.append(('nonfinite', label, -1, -1, float('nan')))
            if self.last_cmd is None:
                eff = self._eff_seq + 1
                self._ref = (eff, now)
            elif label <= self.last_label:
                eff = self._eff_seq  # same / older label: CommandAudit's duplicate rule
            else:
                # the labels count the periods; they may not run ahead of the real time elapsed
                # since the reference command by more than JITTER_PERIODS (inflated seqs)
                ref_eff, ref_ns = self._ref
                budget = ref_eff + int((now - ref_ns) * 1e-9 / self.period_s) + JITTER_PERIODS
                eff = self._eff_seq + max(1, min(label - self.last_label, budget - self._eff_seq))
                if eff < self._eff_seq + label - self.last_label:
                    self.label_clamps += 1
            if self.last_cmd is not None:
                step = np.abs(c - self.last_cmd) / (self.model.v_max * self.period_s)
                self.cmd_log.append((now, float(step.max()) if step.size else 0.0))
            self.audit.check(eff, c)
            self._eff_seq, self._last_rx_ns = eff, now
            if np.all(np.isfinite(c)):
                self.target = c.copy()  # the robot tracks it (:meth:`_follow`)
            self.last_label = max(label, self.last_label)
            self.last_cmd = c
            self.commands += 1

    def _follow(self, now_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """The robot's measured state at its sample time `now_ns` (caller holds the lock): it moves
        to its latest command, no faster than v_max over the time since the previous sample (a
        burst of commands after a stall is not a teleport), and reports the velocity it moved at."""
        el_s = (now_ns - self._tick_ns) * 1e-9 if self._tick_ns else self.period_s
        self._tick_ns = now_ns
        if self.target is None or el_s <= 0.0:
            self.dq = np.zeros_like(self.q)
            return self.q.copy(), self.dq.copy()
        step = np.clip(self.target - self.q, -self._v_max * el_s, self._v_max * el_s)
        self.q = self.q + step
        self.dq = step / el_s
        return self.q.copy(), self.dq.copy()

    def violations(self) -> int:
        """Commands that broke a limit so far (position, velocity, acceleration, non-finite)."""
        a = self.audit
        return a.position_violations + a.velocity_violations + a.acceleration_violations + a.nonfinite

    def min_step_ratio(self, t0_ns: int, t1_ns: int) -> float:
        """Smallest command step received in [t0_ns, t1_ns] (monotonic), as a fraction of one
        period of v_max (0 = a command at rest came); inf when none arrived."""
        with self._lock:
            steps = [r for t, r in self.cmd_log[-2000:] if t0_ns <= t <= t1_ns]
        return min(steps) if steps else float('inf')

    def moving_ratio(self, window_s: float = 0.05) -> float:
        """Largest command step over the last `window_s`, as a fraction of v_max (0 = at rest)."""
        end = time.monotonic_ns() - int(window_s * 1e9)
        with self._lock:
            recent = [r for t, r in self.cmd_log[-400:] if t >= end]
        return max(recent) if recent else 0.0

    # ---------------------------------------------------------------- safety node observers
    def _on_status(self, msg: Any) -> None:
        values = {kv.key: kv.value for kv in msg.values}
        lvl = int.from_bytes(msg.level, 'little') if isinstance(msg.level, bytes) else int(msg.level)
        self.status, self.status_level = values, lvl
        self.status_log.append((time.monotonic_ns(), lvl, str(msg.message), values))
        if len(self.status_log) > 5000:
            del self.status_log[:1000]

    @property
    def latched(self) -> bool:
        """The safety node reports a latched stop."""
        return self.status.get('latched', 'False') == 'True'

    def reset(self, timeout_s: float = 3.0) -> tuple[bool, str]:
        """Call the safety node's ``~/reset``; (success, message), (False, 'timeout') when no answer."""
        return self._call(
            self._reset_cli, self._Trigger.Request(), timeout_s, lambda r: (r.success, r.message)
        )

    def set_parameters(self, values: dict[str, Any], timeout_s: float = 3.0) -> tuple[bool, str]:
        """SetParameters on the safety node; (all successful, the reasons)."""
        from rclpy.parameter import Parameter

        req = self._SetParameters.Request()
        req.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]

        def _res(r: Any) -> tuple[bool, str]:
            return all(x.successful for x in r.results), '; '.join(x.reason for x in r.results if x.reason)

        return self._call(self._param_cli, req, timeout_s, _res)

    def _call(self, cli: Any, req: Any, timeout_s: float, conv: Callable[[Any], Any]) -> Any:
        if not cli.wait_for_service(timeout_sec=timeout_s):
            return False, 'service not available'
        fut = cli.call_async(req)
        end = time.monotonic() + timeout_s
        while not fut.done() and time.monotonic() < end:
            time.sleep(0.005)
        if not fut.done() or fut.result() is None:
            return False, 'timeout'
        return conv(fut.result())


def next_period(prev_ns: int, now_ns: int, period_ns: int, max_behind: int = 20) -> tuple[int, int]:
    """The robot's next sample time after the one at `prev_ns` [ns, monotonic] at time `now_ns`, and
    the periods skipped before it.

    Normally ``prev_ns + period_ns`` (a little late: published at once, catching up). More than
    `max_behind` periods behind (a stall of the loaded machine): no burst catch-up, the periods it
    could not publish are skipped -- and counted, as a robot's cycle counter counts periods, not
    messages -- so the stamps stay on the period grid and the seqs count the real time: the audit's
    labels never under-count the time elapsed. RT-safe (arithmetic only).
    """
    next_ns = prev_ns + period_ns
    if next_ns >= now_ns - max_behind * period_ns:
        return next_ns, 0
    skipped = (now_ns - next_ns) // period_ns
    return next_ns + skipped * period_ns, skipped


def _try_fifo() -> None:
    """Run the calling thread at SCHED_FIFO DRIVER_PRIORITY when allowed (else unchanged)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(DRIVER_PRIORITY))
    except (OSError, AttributeError):
        pass
