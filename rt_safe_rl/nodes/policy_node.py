"""`policy_node`: PolicyInferenceNode, the learned policy as a ROS 2 lifecycle node.

configure: read parameters, load the pipeline YAML and the policy file (hash check), choose the backend
(``auto`` measures them), warm up, preallocate messages, create the subscriptions and publishers;
a missing/corrupt policy makes configure FAIL with the path in the log.
activate: reset recurrent state, start processing ``joint_states``.

RT path (:meth:`PolicyInferenceNode.process_state`, called from the ``joint_states`` callback in rt group
``control``, or by :class:`~rt_safe_rl.rt.cycle.ControlCycle` when ``direct_cycle`` is set before
configure: then there is no ``joint_states`` subscription): :meth:`PolicyRuntime.control_step`
(policy every ``1 / policy.rate_hz``, hold / linear in between), then the proposed target goes to

- channel ``policy/action`` (resolved name; intra_process): one float64 row
  ``[state_seq, valid (1.0 / 0.0), q_target_0 .. q_target_{n-1}]`` stamped with the state's header
  stamp (see :class:`~rt_safe_rl.nodes.msgs.ActionRecord`);
- topic ``policy/action`` (``sensor_msgs/JointState``: ``header.stamp`` = the joint state's stamp,
  ``name`` = the joints, ``position`` = the targets in rad; an invalid action is all-NaN so any
  consumer fails closed); every cycle in DDS mode (it is the hand-off); when intra_process, the
  channel's latest record every ``topics.observer_decimation`` control periods, published by a
  :class:`~rt_safe_rl.rt.observer.ChannelMirror` from the ``observers`` thread half a period off
  the cycle (the control cycle itself never publishes it).

``joint_states`` are decoded by the one :class:`~rt_safe_rl.nodes.msgs.JointStateReader` the safety
node uses too (joints matched by name; a message that does not give every joint a position is an
invalid action, logged once per distinct reason).

Inputs: every pipeline input with a ``topic`` (e.g. ``command`` on ``policy/command``) is subscribed as
``Float64MultiArray`` in the same ``control`` group (never concurrent with the policy).
Service ``~/reset_memory`` (std_srvs/Trigger): reset recurrent state at the next control cycle.
Metrics: stage ``inference`` per policy step, counter ``policy_steps``, counter ``faults`` per invalid step.

Parameters ``policy.*``: :mod:`._policy_params` (descriptors; structural ones read-only).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from rt_safe_rl.config import AppConfig
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.core.policy.runtime import PolicyRuntime
from rt_safe_rl.nodes._policy_io import PolicyNodeIO
from rt_safe_rl.nodes._sim_base import run_node
from rt_safe_rl.nodes.msgs import ActionRecord
from rt_safe_rl.rt.metrics import registry

ACTION_HEADER = ActionRecord.HEADER
"""Channel row = [state_seq, valid, q_target...]: values before the targets (:class:`ActionRecord`)."""


class PolicyInferenceNode(PolicyNodeIO):
    """Lifecycle node running :class:`~rt_safe_rl.core.policy.runtime.PolicyRuntime` (see module docstring).

    Attributes after configure (non-RT readers): runtime (``.info`` has the backend table),
    joint_names, action_channel (None in DDS mode), cycles, invalid_cycles, last_error.
    """

    def __init__(
        self,
        *,
        config: AppConfig | None = None,
        node_name: str = 'policy_node',
        namespace: str = '',
        intra_process: bool = False,
        **node_kwargs: Any,
    ) -> None:
        super().__init__(
            node_name, config=config, namespace=namespace, intra_process=intra_process, **node_kwargs
        )
        self.runtime: Any = None
        self.joint_names: list[str] = []
        self.action_channel: Any = None
        self.last_error = ''
        self._active = False
        self._reset_requested = False
        self._subs: list[Any] = []
        self._pub: Any = None
        self._mirror: Any = None  # intra_process: ChannelMirror of the action channel on the topic
        self._srv: Any = None
        self.cycles = 0
        self.invalid_cycles = 0
        #: set True before configure when a ControlCycle calls process_state (no joint_states input)
        self.direct_cycle = False

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load policy + pipeline, choose backend, warm up, preallocate, create I/O."""
        app = self.app
        try:
            cfg = self.node_config()
            names = self._robot_joint_names(cfg)
            log = self.get_logger()
            self.runtime = PolicyRuntime.from_config(cfg, names, base_dir=app.base_dir, logger=log)
        except RtSafeRlError as err:
            self.last_error = str(err)
            self.get_logger().error(f'configure failed: {err}')
            return TransitionCallbackReturn.FAILURE
        except Exception as err:
            self.last_error = f'{type(err).__name__}: {err}'
            self.get_logger().error(f'configure failed: {self.last_error}')
            return TransitionCallbackReturn.FAILURE
        rt = self.runtime
        self._match_names = bool(rt.joint_names)  # unknown robot names: messages taken in order
        if not rt.joint_names:
            rt.joint_names = [f'joint{i}' for i in range(rt.n_joints)]
        self.joint_names = rt.joint_names
        topics = self._create_io(rt)
        reg = registry()
        self._stage = reg.stage('inference')
        self._steps = reg.counter('policy_steps')
        self._faults = reg.counter('faults')
        info = rt.info
        self.get_logger().info(
            f'configured: policy {info["policy"]["path"]} (sha256 {info["policy"]["sha256"][:12]}), '
            f'{rt.obs_dim} -> {rt.act_dim}, recurrent={info["policy"]["recurrent"]}, '
            f'backend {info["selected"]!r}, '
            f'{cfg.rate_hz:g} Hz ({cfg.interpolation}), inputs {sorted(topics)}, '
            f'{"channel + " if self.intra_process else ""}topic {self._pub.topic_name}'
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Reset recurrent state and start processing joint states."""
        ret = super().on_activate(state)
        if self.runtime is not None:
            self.runtime.reset()
        self._reset_requested = False
        self._active = True
        if self._mirror is not None:
            self._mirror.task.enabled = True
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop processing joint states (nothing more is proposed)."""
        self._active = False
        if self._mirror is not None:
            self._mirror.task.enabled = False
        return super().on_deactivate(state)

    # ------------------------------------------------------------------ callbacks
    def _on_joint_state(self, msg: JointState) -> None:
        """joint_states -> process_state (control group), decoded by the shared JointStateReader
        (joints matched by name when the robot's names are known, else taken in order)."""
        r = self._reader
        now = time.monotonic_ns()
        r.read(msg, now)
        if not r.complete:
            self._publish_invalid(
                now, r.seq, r.last_error or 'joint_states without a position for every joint', r.stamp_ns
            )
            return
        self.process_state(now, r.seq, r.q, r.dq, header_stamp_ns=r.stamp_ns)
        r.accept()

    def _input_callback(self, name: str) -> Any:
        def on_input(msg: Float64MultiArray) -> None:
            if self.runtime is not None and not self.runtime.try_set_input(name, msg.data):
                self.last_error = f'input {name!r}: wrong size or non-finite values (ignored)'

        return on_input

    def set_policy_command(self, stamp_ns: int, values: Any) -> None:
        """Latest task command (same thread as process_state; benchmarks call it directly)."""
        if self.runtime is not None:
            self.runtime.try_set_input('command', values)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        if self.runtime is None:
            response.success = False
            response.message = 'not configured'
        elif self._active:
            self._reset_requested = True  # done by the control thread: the runtime is never shared
            response.success = True
            response.message = 'recurrent state reset at the next control cycle'
        else:
            self.runtime.reset()
            response.success = True
            response.message = 'recurrent state reset'
        return response

    def reset_for_replay(self) -> None:
        """Reset now (caller owns the control thread, e.g. a benchmark between repeats)."""
        if self.runtime is not None:
            self.runtime.reset()

    # ------------------------------------------------------------------ RT path
    def process_state(self, stamp_ns: int, seq: int, q: Any, dq: Any, *, header_stamp_ns: int = 0) -> None:
        """One control cycle for state `seq` (-1: none) received at `stamp_ns` (the policy's
        schedule clock) with header stamp `header_stamp_ns` (names the state in the action; 0 =
        `stamp_ns`). Positions rad, velocities rad/s, robot order."""
        rt = self.runtime
        if rt is None or not self._active:
            return
        if self._reset_requested:
            self._reset_requested = False
            rt.reset()
        target = self._target
        try:
            valid = rt.control_step(stamp_ns, q, dq, None, target)
        except Exception as err:
            self.last_error = f'{type(err).__name__}: {err}'
            valid = False
        self.cycles += 1
        if rt.ran_policy:
            if valid:
                self._steps.inc()
                self._stage.record_ns(time.monotonic_ns(), rt.last_inference_ns)
            else:
                self._faults.inc()
        if not valid:
            self.invalid_cycles += 1
        self._emit(header_stamp_ns or stamp_ns, seq, valid, target)

    def _publish_invalid(self, stamp_ns: int, seq: int, why: str, header_stamp_ns: int = 0) -> None:
        if why != self.last_error:
            self.get_logger().error(f'invalid action: {why}')
        self.last_error = why
        self.invalid_cycles += 1
        self._target.fill(np.nan)
        self._emit(header_stamp_ns or stamp_ns, seq, False, self._target)

    def _emit(self, state_stamp_ns: int, seq: int, valid: bool, target: Any) -> None:
        """The action for the state stamped `state_stamp_ns` (seq -1: none) to the channel and the
        topic (:class:`ActionRecord`). RT path."""
        ch = self.action_channel
        if ch is not None:
            ActionRecord.write(ch.loan(), seq, valid, target)
            ch.commit(state_stamp_ns)
        elif self._pub is not None:  # DDS mode: the topic is the hand-off, every cycle
            ActionRecord.to_msg(self._msg, self._msg_view, state_stamp_ns, valid, target)
            self._pub.publish(self._msg)


def main(argv: list[str] | None = None) -> int:
    """`policy_node` executable (ROS args in `argv`, e.g. ``--ros-args -p policy.backend:=numba``)."""
    return run_node(
        'policy_node',
        PolicyInferenceNode,
        argv,
        summary='The learned policy as a lifecycle node (autostart: '
        'configure + activate), publishing its action at policy.rate_hz.',
    )


if __name__ == '__main__':
    sys.exit(main())
