"""Pipelines driven by the replay bench.

* :class:`NodePipeline` — ours: :class:`~rt_safe_rl.nodes.policy_node.PolicyInferenceNode` and
  :class:`~rt_safe_rl.nodes.safety_node.SafetyFilterNode` composed in this process by
  :func:`rt_safe_rl.bringup.compose` (``intra_process=True``, own rclpy context, namespace
  ``rt_safe_rl_bench``), configured and activated by ``Composition.start``, and driven in one
  thread through ``process_state`` / ``process_action`` (DEVELOPERS.md, "Benchmarks may call these
  methods directly"). Its executor is never spun, so no timer or DDS callback runs concurrently
  with the measured calls.
* :func:`naive_runner_for` — the naive plain-rclpy pipeline (:mod:`rt_safe_rl.bench.naive`)
  configured like ours (same policy file, decimation, joint limits).

Construction and close are not RT-safe; ``policy_step`` / ``safety_step`` / ``read_command``
add no allocation of their own to the nodes' RT path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import yaml

from rt_safe_rl.bench.naive import NaiveRunner, add_misses
from rt_safe_rl.bringup import compose
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.nodes.msgs import set_stamp, stamp_ns_of
from rt_safe_rl.paths import resolve
from rt_safe_rl.rt.metrics import registry

if TYPE_CHECKING:
    from rt_safe_rl.nodes.policy_node import PolicyInferenceNode
    from rt_safe_rl.nodes.safety_node import SafetyFilterNode

FloatArray = npt.NDArray[np.float64]
BENCH_NAMESPACE = 'rt_safe_rl_bench'


class PipelineError(RtSafeRlError):
    """The pipeline under test could not be built (missing node, failed configure/activate)."""


def _resolve(path: str, base: Path) -> Path:
    return resolve(path, base)


def _policy_yaml(app: Any) -> dict[str, Any]:
    """The policy's observation/action YAML (``policy.config``), {} when unreadable."""
    try:
        p = _resolve(app.policy.config, app.base_dir)
        data = yaml.safe_load(p.read_text()) if p.is_file() else {}
        return data if isinstance(data, dict) else {}
    except Exception:  # broad on purpose: optional information for the naive pipeline
        return {}


class NodePipeline:
    """Our pipeline: policy + safety lifecycle nodes composed in-process, driven by direct calls."""

    def __init__(self, app: Any) -> None:
        try:
            import rclpy
            from rclpy.context import Context
            from rclpy.signals import SignalHandlerOptions
        except ImportError as err:
            raise PipelineError(f'the policy/safety nodes are not importable: {err}') from None
        self.app = app
        self.model_path = str(_resolve(app.policy.path, app.base_dir))
        self._ctx = Context()
        # Ctrl-C must stay a KeyboardInterrupt (partial report), not an rclpy context shutdown
        rclpy.init(context=self._ctx, args=[], signal_handler_options=SignalHandlerOptions.NO)
        self._comp: Any = None
        try:
            # the nodes exactly as bringup composes them (its executor is never spun here)
            self._comp = compose(
                app, ['safety', 'policy'], context=self._ctx, namespace=BENCH_NAMESPACE, intra_process=True
            )
            errors = self._comp.start()
            if errors:
                raise PipelineError('; '.join(f'{k}: {why}' for k, why in errors.items()))
        except BaseException:
            self.close()
            raise
        self.policy: PolicyInferenceNode = self._comp.nodes['policy']
        self.safety: SafetyFilterNode = self._comp.nodes['safety']
        self.joint_names = list(self.policy.joint_names)  # the robot's, in robot order (configure)
        if not self.joint_names:
            self.close()
            raise PipelineError('the configured policy node has no robot joint names')
        self.n_command = len(self.joint_names)
        self._interventions = registry().counter('safety_interventions')
        backend = self.policy.runtime.info.get('backend', '?')
        self.description = (
            f'ours: PolicyInferenceNode + SafetyFilterNode composed in one process by '
            f'bringup.compose (intra_process channel), driven by direct process_state/process_action '
            f'calls in one thread; policy backend {backend}'
        )

    # -- ReplayPipeline -------------------------------------------------------------------------

    def reset(self) -> None:
        """Recurrent state -> zero, fresh safety filter (between repeats)."""
        self.policy.reset_for_replay()
        self.safety.reset_for_replay()

    def set_human(self, stamp_ns: int, xyz: FloatArray) -> None:
        """Latest human position (m), stamped on receipt (monotonic, like the node's callback)."""
        self.safety.set_human(time.monotonic_ns(), xyz)

    def set_operator(self, stamp_ns: int, values: FloatArray) -> None:
        """Latest operator targets (rad), stamped on receipt (monotonic)."""
        self.safety.set_operator(time.monotonic_ns(), values)

    def set_policy_command(self, stamp_ns: int, values: FloatArray) -> None:
        """Latest task command of the policy."""
        self.policy.set_policy_command(stamp_ns, values)

    def policy_step(self, stamp_ns: int, seq: int, q: FloatArray, dq: FloatArray) -> None:
        """State receipt in both nodes, as their joint_states callbacks would do it.

        The safety node gets the monotonic receipt time (its staleness checks compare it with
        its own clock); the policy gets the recorded time ``stamp_ns`` (its 50 Hz schedule and
        observation phase then follow the recording at any replay speed: deterministic).
        """
        self.safety.process_state(time.monotonic_ns(), seq, q, dq)
        self.policy.process_state(stamp_ns, seq, q, dq)

    def safety_step(self, seq: int) -> bool:
        """SafetyFilterNode.process_action; True when the intervention counter moved."""
        before = self._interventions.value
        self.safety.process_action(seq)
        return self._interventions.value != before

    def read_command(self, out: FloatArray) -> int:
        """Latest safe command and the state seq it was computed from."""
        return self.safety.read_command(out)

    def safety_status(self) -> dict[str, Any]:
        """Fault and margins of the safety filter after the last step (non-RT), when available."""
        st = self.safety.status()
        keys = ('fault', 'fault_code', 'latched', 'active', 'stopping', 'deadline_misses', 'cycles')
        return {k: st[k] for k in keys if k in st}

    def close(self) -> None:
        """Deactivate, clean up and destroy the nodes; shut the context down. Idempotent."""
        import rclpy

        comp, self._comp = self._comp, None
        if comp is not None:
            comp.destroy()  # deactivate + clean up (best effort), then destroy
        if self._ctx.ok():
            rclpy.shutdown(context=self._ctx)


def naive_runner_for(app: Any, pipeline: Any) -> Callable[[Any, Any], dict[str, Any]]:
    """A ``naive_runner(inputs, cfg)`` for :func:`rt_safe_rl.bench.replay.run_benchmark`."""

    def run(inputs: Any, cfg: Any) -> dict[str, Any]:
        from rt_safe_rl.core.robot_model import RobotModel

        model = RobotModel.from_config(app.robot, app.base_dir)
        pol = _policy_yaml(app)
        default_q = pol.get('default_q') or model.home().tolist()
        scale = float((pol.get('action') or {}).get('scale', 1.0))
        decimation = max(1, round(app.control.rate_hz / float(app.policy.rate_hz)))
        goal = inputs.policy_command.values[0] if inputs.policy_command.n else None
        runner = NaiveRunner(
            pipeline.model_path,
            pipeline.joint_names,
            model.q_min.tolist(),
            model.q_max.tolist(),
            default_q,
            decimation,
            scale,
            cfg.naive_torch_threads,
            cfg.naive_timeout_s,
            goal,
        )
        fields = runner.run(inputs.states.q, inputs.states.dq, cfg.naive_max_messages)
        add_misses(fields, app.control.period_ns, fields['_samples'])
        return fields

    return run


PROBE_SEQ = 2**32 - 1  # the readiness probe's state (an external pipeline)


class ExternalPipeline:
    """A pipeline running elsewhere (another process, the robot's computer), reached over DDS.

    The bench publishes each state on ``topics.joint_states`` (``header.stamp`` = the wall clock at
    publish, increasing across repeats) and the side streams on their topics, then waits (lockstep,
    up to ``timeout_s``) for the safe command on ``topics.joint_command`` stamped with that state's
    stamp (``sensor_msgs/JointState``; no field is repurposed). Stages: ``publish_us``
    (the publish call) and ``response_us`` (publish -> command callback); e2e is release ->
    command received. Do not run it beside a real robot: the robot would receive these commands.
    Recurrent state cannot be reset from here (``reset`` calls the policy
    node's ``~/reset_memory`` service when it answers within 1 s). Not RT-safe (rclpy messages).
    """

    stage_names = ('publish_us', 'response_us')

    def __init__(self, app: Any, timeout_s: float = 1.0, namespace: str = '') -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions

        from rt_safe_rl.core.robot_model import RobotModel

        self.app = app
        self.model_path = str(_resolve(app.policy.path, app.base_dir))
        self.joint_names = list(RobotModel.from_config(app.robot, app.base_dir).joint_names)
        self.n_command = len(self.joint_names)
        self.timeout_s = float(timeout_s)
        self._ctx = Context()
        # Ctrl-C must stay a KeyboardInterrupt (partial report), not an rclpy context shutdown
        rclpy.init(context=self._ctx, args=[], signal_handler_options=SignalHandlerOptions.NO)
        from geometry_msgs.msg import PointStamped
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray

        t = app.topics
        self._node: Any = Node('rt_safe_rl_bench_driver', namespace=namespace, context=self._ctx)
        self._exec = SingleThreadedExecutor(context=self._ctx)
        self._exec.add_node(self._node)
        depth = t.qos_depth
        self._pub_state = self._node.create_publisher(JointState, t.joint_states, depth)
        self._pub_human = self._node.create_publisher(PointStamped, t.human_position, depth)
        self._pub_oper = self._node.create_publisher(Float64MultiArray, t.operator_command, depth)
        self._pub_pcmd = self._node.create_publisher(Float64MultiArray, t.policy_command, depth)
        self._node.create_subscription(
            JointState,
            t.joint_command,
            self._on_command,
            QoSProfile(depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT),
        )
        self._state = JointState()
        self._state.name = list(self.joint_names)
        self._point = PointStamped()
        self._f64 = Float64MultiArray
        self._cmd = np.full(self.n_command, np.nan)
        self._cmd_seq = -1
        self._sent_seq = -1
        self._sent_stamp_ns = 0
        self._interventions = 0
        self.lost = 0
        self._reset_service: bool | None = None  # False once the service was not found
        self.description = (
            f'external pipeline over DDS: states on {self._pub_state.topic_name}, '
            f'commands from {t.joint_command} (lockstep, timeout {self.timeout_s:g} s)'
        )

    def _on_command(self, msg: Any) -> None:
        n = min(len(msg.position), self.n_command)
        self._cmd[:n] = msg.position[:n]
        self._cmd_seq = self._sent_seq if stamp_ns_of(msg) == self._sent_stamp_ns else -1

    def wait_for_pipeline(self, timeout_s: float = 10.0, q0: FloatArray | None = None) -> None:
        """Wait until something subscribes to the state topic, then probe it with state ``q0``
        (seq ``PROBE_SEQ``) until a command for that seq comes back.

        Raises:
            PipelineError: nobody subscribes / answers within ``timeout_s``.
        """
        end = time.monotonic() + timeout_s
        while self._pub_state.get_subscription_count() == 0:
            if time.monotonic() > end:
                raise PipelineError(
                    f'no subscriber on {self._pub_state.topic_name} within {timeout_s:g} s: '
                    f'start the pipeline (e.g. `bringup`) with the same ROS_DOMAIN_ID'
                )
            self._exec.spin_once(timeout_sec=0.05)
        q = np.zeros(self.n_command) if q0 is None else q0
        while self._cmd_seq != PROBE_SEQ:
            if time.monotonic() > end:
                raise PipelineError(
                    f'{self._pub_state.topic_name} has a subscriber but no command came back '
                    f'on {self.app.topics.joint_command} within {timeout_s:g} s'
                )
            self.policy_step(0, PROBE_SEQ, q, np.zeros_like(q))
            probe_end = time.monotonic() + 0.2
            while self._cmd_seq != PROBE_SEQ and time.monotonic() < probe_end:
                self._exec.spin_once(timeout_sec=0.05)

    def reset(self) -> None:
        """Ask the policy node to reset its recurrent state (best effort)."""
        from std_srvs.srv import Trigger

        if self._reset_service is False:
            return
        name = self._node.resolve_service_name('policy_node/reset_memory')
        cli: Any = self._node.create_client(Trigger, name)
        try:
            self._reset_service = bool(cli.wait_for_service(timeout_sec=1.0))
            if self._reset_service:
                fut = cli.call_async(Trigger.Request())
                self._exec.spin_until_future_complete(fut, timeout_sec=1.0)
        finally:
            self._node.destroy_client(cli)

    def set_human(self, stamp_ns: int, xyz: FloatArray) -> None:
        """Publish the human position (m)."""
        p = self._point
        p.point.x, p.point.y, p.point.z = float(xyz[0]), float(xyz[1]), float(xyz[2])
        self._pub_human.publish(p)

    def set_operator(self, stamp_ns: int, values: FloatArray) -> None:
        """Publish the operator targets (rad)."""
        self._pub_oper.publish(self._f64(data=[float(v) for v in values]))

    def set_policy_command(self, stamp_ns: int, values: FloatArray) -> None:
        """Publish the policy's task command."""
        self._pub_pcmd.publish(self._f64(data=[float(v) for v in values]))

    def policy_step(self, stamp_ns: int, seq: int, q: FloatArray, dq: FloatArray) -> None:
        """Publish state ``seq``, stamped now (the wall clock; `stamp_ns` is the recording's time)."""
        m = self._state
        stamp = max(time.time_ns(), self._sent_stamp_ns + 1)
        set_stamp(m, stamp)
        self._sent_seq, self._sent_stamp_ns = seq, stamp
        m.position = [float(x) for x in q]
        m.velocity = [float(x) for x in dq]
        self._pub_state.publish(m)

    def safety_step(self, seq: int) -> bool:
        """Wait for the command of ``seq`` (False either way: interventions are not visible here)."""
        end = time.monotonic() + self.timeout_s
        while self._cmd_seq != seq and time.monotonic() < end:
            self._exec.spin_once(timeout_sec=self.timeout_s)
        if self._cmd_seq != seq:
            self.lost += 1
        return False

    def read_command(self, out: FloatArray) -> int:
        """Latest received command and its seq."""
        out[:] = self._cmd
        return self._cmd_seq

    def close(self) -> None:
        """Destroy the driver node and the context. Idempotent."""
        import rclpy

        if self._node is not None:
            self._exec.shutdown()
            self._node.destroy_node()
            self._node = None
        if self._ctx.ok():
            rclpy.shutdown(context=self._ctx)
