"""`sim_human`: a simulated person walking in and out of the robot's workspace.

Publishes ``geometry_msgs/PointStamped`` (robot base frame, m) on ``topics.human_position`` at
``sim.human.rate_hz`` from a :class:`~rt_safe_rl.rt.executor.PeriodicTask` in rt group ``sim``;
the path is :class:`~rt_safe_rl.sim.human.HumanWalker` (seeded, a pure function of time since
activation). Parameter ``human.active`` (tunable): false parks the person at ``far_m``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter

from rt_safe_rl.config import AppConfig
from rt_safe_rl.nodes._sim_base import PeriodicSimNode, run_node
from rt_safe_rl.rt.executor import OFF_CYCLE_SLOTS, PeriodicTask, named_group, off_cycle_phase_ns
from rt_safe_rl.rt.ring import SpscRing
from rt_safe_rl.sim.human import HumanWalker


class SimHumanNode(PeriodicSimNode):
    """Simulated human (see the module docstring).

    ``trace`` holds ``(t_ns, x, y, z)`` of every published position (one reader: a test / demo).
    """

    def __init__(
        self,
        *,
        config: AppConfig | None = None,
        node_name: str = 'sim_human',
        namespace: str = '',
        intra_process: bool = False,
        **node_kwargs: Any,
    ) -> None:
        super().__init__(
            node_name, config=config, namespace=namespace, intra_process=intra_process, **node_kwargs
        )
        self.declare_parameter(
            'human.active',
            True,
            ParameterDescriptor(
                description='true: walk in and out of the workspace; false: stay at sim.human.far_m'
            ),
        )
        self.active = bool(self.get_parameter('human.active').value)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.walker = HumanWalker(self.app.sim.human)
        self.trace = SpscRing(1 << 13, 4)
        self.published = 0
        self._pos = np.zeros(3)
        self._row = np.zeros(4)
        self._pub: Any = None

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            if p.name == 'human.active':
                if not isinstance(p.value, bool):
                    return SetParametersResult(successful=False, reason='human.active must be a bool')
                self.active = p.value
        return SetParametersResult(successful=True)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Create the publisher, the message and the periodic task."""
        cfg = self.app.sim.human
        self._msg = PointStamped()
        self._msg.header.frame_id = cfg.frame_id
        self._pub = self.create_lifecycle_publisher(
            PointStamped, self.app.topics.human_position, self.app.topics.qos_depth
        )
        period_ns = round(1e9 / cfg.rate_hz)
        self._task = PeriodicTask(
            f'{self.get_name()}_tick',
            named_group(self, 'sim'),
            period_ns,
            self._tick,
            phase_ns=off_cycle_phase_ns(self.app.control.period_ns, OFF_CYCLE_SLOTS['sim_human']),
        )
        self.get_logger().info(
            f'configured: {cfg.rate_hz:.0f} Hz on {self._pub.topic_name}, '
            f'walk cycle {self.walker.cycle_s:.1f} s, {cfg.far_m} <-> {cfg.near_m} m'
        )
        return TransitionCallbackReturn.SUCCESS

    def _release_entities(self) -> None:
        if self._pub is not None:
            self.destroy_publisher(self._pub)
            self._pub = None

    def elapsed_s(self, now_ns: int | None = None) -> float:
        """Seconds since activation (the walker's time)."""
        return ((time.monotonic_ns() if now_ns is None else now_ns) - self._t0_ns) * 1e-9

    def _tick(self, deadline_ns: int) -> None:
        now = time.monotonic_ns()
        if self._t0_ns == 0:
            self._t0_ns = now
        if self.active:
            self.walker.position(self.elapsed_s(now), self._pos)
        else:
            self._pos[0] = self.app.sim.human.far_m
            self._pos[1] = 0.0
            self._pos[2] = self.app.sim.human.height_m
        msg = self._msg
        wall = time.time_ns()
        msg.header.stamp.sec = wall // 1_000_000_000
        msg.header.stamp.nanosec = wall % 1_000_000_000
        msg.point.x = float(self._pos[0])
        msg.point.y = float(self._pos[1])
        msg.point.z = float(self._pos[2])
        self._pub.publish(msg)
        self.published += 1
        self._row[0] = now
        self._row[1:] = self._pos
        self.trace.try_push(self._row)


def main(argv: list[str] | None = None) -> int:
    """`sim_human` executable."""
    return run_node('sim_human', SimHumanNode, argv)


if __name__ == '__main__':
    sys.exit(main())
