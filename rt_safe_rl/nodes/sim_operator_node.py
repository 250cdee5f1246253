"""`sim_operator`: task goals for the policy and an operator command for shared control.

At ``sim.operator.rate_hz`` (a :class:`~rt_safe_rl.rt.executor.PeriodicTask` in rt group ``sim``)
publishes the current joint-space goal (rad, ``std_msgs/Float64MultiArray``) on
``topics.policy_command`` -- a new seeded goal every ``goal_period_s``
(:class:`~rt_safe_rl.sim.operator.GoalGenerator`, the distribution the default policy was
trained on) -- and, when ``publish_operator_command``, the operator's position targets
(goal + slow sinusoid) on ``topics.operator_command``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from std_msgs.msg import Float64MultiArray

from rt_safe_rl.config import AppConfig
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.nodes._sim_base import PeriodicSimNode, run_node
from rt_safe_rl.rt.executor import OFF_CYCLE_SLOTS, PeriodicTask, named_group, off_cycle_phase_ns
from rt_safe_rl.sim.operator import GoalGenerator, OperatorCommand


class SimOperatorNode(PeriodicSimNode):
    """Goal generator + simulated operator (see the module docstring).

    ``goals_sent`` counts goal changes; ``goal`` is the current goal (rad).
    """

    def __init__(
        self,
        *,
        config: AppConfig | None = None,
        node_name: str = 'sim_operator',
        namespace: str = '',
        intra_process: bool = False,
        **node_kwargs: Any,
    ) -> None:
        super().__init__(
            node_name, config=config, namespace=namespace, intra_process=intra_process, **node_kwargs
        )
        self.goals_sent = 0
        self.published = 0
        self.goal = np.zeros(0)
        self._goal_pub: Any = None
        self._op_pub: Any = None
        self._next_goal_ns = 0

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the limits (robot model), build the generators, publishers and task."""
        from rt_safe_rl.core.robot_model import RobotModel
        from rt_safe_rl.sim.arm import ArmLimits

        app = self.app
        cfg = app.sim.operator
        try:
            model = RobotModel.from_config(app.robot, app.base_dir)
            lim = ArmLimits.from_model(model, app.sim.robot)
            home = lim.initial_q(app.sim.robot)
            self._goals = GoalGenerator(
                lim.q_min, lim.q_max, home, cfg.goal_margin_rad, cfg.goal_span, cfg.seed
            )
        except RtSafeRlError as err:
            self.get_logger().error(f'configure failed: {err}')
            return TransitionCallbackReturn.FAILURE
        n = lim.n_joints
        self._op = OperatorCommand(n, cfg.amplitude_rad, cfg.period_s, lim.q_min, lim.q_max)
        self.goal = home.copy()
        self._goal_msg = Float64MultiArray()
        self._goal_msg.data = [0.0] * n
        self._goal_view = np.frombuffer(self._goal_msg.data, dtype=np.float64)
        self._op_msg = Float64MultiArray()
        self._op_msg.data = [0.0] * n
        self._op_view = np.frombuffer(self._op_msg.data, dtype=np.float64)
        depth = app.topics.qos_depth
        self._goal_pub = self.create_lifecycle_publisher(Float64MultiArray, app.topics.policy_command, depth)
        if cfg.publish_operator_command:
            self._op_pub = self.create_lifecycle_publisher(
                Float64MultiArray, app.topics.operator_command, depth
            )
        self._goal_period_ns = round(cfg.goal_period_s * 1e9)
        self._task = PeriodicTask(
            f'{self.get_name()}_tick',
            named_group(self, 'sim'),
            round(1e9 / cfg.rate_hz),
            self._tick,
            phase_ns=off_cycle_phase_ns(app.control.period_ns, OFF_CYCLE_SLOTS['sim_operator']),
        )
        self.get_logger().info(
            f'configured: goals on {self._goal_pub.topic_name} every {cfg.goal_period_s} s'
            + (f', operator command on {self._op_pub.topic_name}' if self._op_pub else '')
        )
        return TransitionCallbackReturn.SUCCESS

    def _release_entities(self) -> None:
        for pub in (self._goal_pub, self._op_pub):
            if pub is not None:
                self.destroy_publisher(pub)
        self._goal_pub = self._op_pub = None

    def _tick(self, deadline_ns: int) -> None:
        now = time.monotonic_ns()
        if self._t0_ns == 0:
            self._t0_ns = now
            self._next_goal_ns = now + self._goal_period_ns
        if now >= self._next_goal_ns:
            self.goal = self._goals.sample()  # allocates one small array per goal period (non-critical)
            self.goals_sent += 1
            self._next_goal_ns += self._goal_period_ns
        np.copyto(self._goal_view, self.goal)
        self._goal_pub.publish(self._goal_msg)
        if self._op_pub is not None:
            self._op.value((now - self._t0_ns) * 1e-9, self.goal, self._op_view)
            self._op_pub.publish(self._op_msg)
        self.published += 1


def main(argv: list[str] | None = None) -> int:
    """`sim_operator` executable."""
    return run_node('sim_operator', SimOperatorNode, argv)


if __name__ == '__main__':
    sys.exit(main())
