"""`bringup`: compose the package's nodes in ONE process from ONE YAML config and run them on the
:class:`~rt_safe_rl.rt.executor.RtExecutor` (the Python equivalent of a component container).

    bringup [--config FILE] [--sim] [--no-monitor] [--namespace NS] [--set KEY=VALUE ...]
            [--duration S] [--ros-args -r forward_position_controller/commands:=/my_robot/commands ...]

Nodes, in start order (configure + activate; stop is deactivate + cleanup in reverse order):
``sim_robot``, ``sim_human``, ``sim_operator`` (with ``--sim``), ``safety`` (before the policy, so
the robot is commanded to stop until actions flow), ``policy``, ``monitor``.

Direct cycle (whenever the robot is composed in-process, i.e. ``--sim`` and ``rt-safe-rl demo``):
ONE :class:`~rt_safe_rl.rt.cycle.ControlCycle` in the ``control`` thread reads the simulated arm,
steps the policy and the safety filter and writes the command, every period, with plain calls
(no DDS topic, thread wake-up or GIL hand-off inside the cycle); ``joint_states`` and the commands
are still published for observers. Without ``--sim`` the robot is another process: the chain runs
from each ``joint_states`` message (policy in the ``control`` thread; with
``control.intra_process`` it hands its action to the safety filter over the in-process channel
in the same thread); everything else is DDS. Remapping and namespaces: ``--ros-args`` rules apply
to every composed node (``-r __ns:=/arm`` or ``--namespace``).

Fail-closed start: a node whose configure/activate fails is reported (one line) and left
inactive while the others keep running -- e.g. with a missing policy file the safety node keeps
commanding a stop; the exit code is then 1 (2 for a bad config / command line, 0 otherwise).
:func:`compose` / :class:`Composition` are the library API (the demo and the
tests use them; a user can add the same node classes to their own executor instead).
Not RT code (start-up / shutdown only).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass, field
from typing import Any

from rt_safe_rl import signals
from rt_safe_rl.config import AppConfig, deep_merge, load_config, parse_override
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.doctor.startup import startup_checks
from rt_safe_rl.rt.channel import get_channel

#: node key -> 'module:Class' (the DEVELOPERS.md constructor contract)
NODE_CLASSES: dict[str, str] = {
    'sim_robot': 'rt_safe_rl.nodes.sim_robot_node:SimRobotNode',
    'sim_human': 'rt_safe_rl.nodes.sim_human_node:SimHumanNode',
    'sim_operator': 'rt_safe_rl.nodes.sim_operator_node:SimOperatorNode',
    'safety': 'rt_safe_rl.nodes.safety_node:SafetyFilterNode',
    'policy': 'rt_safe_rl.nodes.policy_node:PolicyInferenceNode',
    'monitor': 'rt_safe_rl.nodes.monitor_node:MonitorNode',
}
START_ORDER: tuple[str, ...] = tuple(NODE_CLASSES)


def node_class(key: str) -> type:
    """The node class for `key` (imported on first use)."""
    module_name, cls_name = NODE_CLASSES[key].split(':')
    cls = getattr(importlib.import_module(module_name), cls_name)
    assert isinstance(cls, type)
    return cls


def select_nodes(
    *, with_sim: bool, with_operator: bool = True, with_monitor: bool = True, with_policy: bool = True
) -> list[str]:
    """Node keys to compose, in start order."""
    keys = []
    for k in START_ORDER:
        if k.startswith('sim_') and not with_sim:
            continue
        if k == 'sim_operator' and not with_operator:
            continue
        if (k == 'monitor' and not with_monitor) or (k == 'policy' and not with_policy):
            continue
        keys.append(k)
    return keys


@dataclass
class Composition:
    """Composed nodes plus their executor. ``errors`` maps a node key to why it is not active."""

    config: AppConfig
    nodes: dict[str, Any]
    executor: Any
    context: Any
    errors: dict[str, str] = field(default_factory=dict)
    active: list[str] = field(default_factory=list)
    direct: bool = False
    cycle: Any = None

    def start(self, log: Any = None) -> dict[str, str]:
        """Configure + activate every node in start order; a failure leaves that node inactive
        (fail closed: the others keep running). Returns ``errors``."""
        from rclpy.lifecycle import TransitionCallbackReturn

        ok = TransitionCallbackReturn.SUCCESS
        for key, node in self.nodes.items():
            try:
                if node.trigger_configure() != ok:
                    self.errors[key] = _failure_reason(node, 'configure')
                    continue
                if node.trigger_activate() != ok:
                    self.errors[key] = _failure_reason(node, 'activate')
                    continue
            except RtSafeRlError as err:
                self.errors[key] = str(err)
                continue
            self.active.append(key)
        if self.direct and 'sim_robot' in self.active:
            self._attach_cycle()
        if log is not None:
            for key, why in self.errors.items():
                log(f'{key}: not active: {why}')
        return self.errors

    def _attach_cycle(self) -> None:
        """Create and enable the direct ControlCycle (robot -> policy -> safety -> robot)."""
        from rt_safe_rl.nodes.policy_node import ACTION_HEADER
        from rt_safe_rl.rt.cycle import ControlCycle

        robot = self.nodes['sim_robot']
        safety = self.nodes.get('safety') if 'safety' in self.active else None
        policy = self.nodes.get('policy') if 'policy' in self.active else None
        channel = None
        if safety is not None:
            name = safety.resolve_topic_name(self.config.topics.policy_action)
            channel = get_channel(name, robot.n_joints + ACTION_HEADER)
        cycle = ControlCycle(
            'control_cycle',
            'control',
            self.config.control.period_ns,
            robot,
            safety if safety is not None else _NoSafety(),
            policy,
            action_channel=channel,
        )
        self.executor.add_task(cycle)
        cycle.enabled = True
        self.cycle = cycle

    def stop(self) -> None:
        """Deactivate + clean up the active nodes in reverse order (best effort, never raises)."""
        if self.cycle is not None:
            self.cycle.enabled = False
            try:
                self.executor.remove_task(self.cycle)
            except Exception:
                pass
        for key in reversed(list(self.nodes)):
            node = self.nodes[key]
            for step in ('trigger_deactivate', 'trigger_cleanup'):
                try:
                    getattr(node, step)()
                except Exception:
                    pass
        self.active.clear()

    def destroy(self) -> None:
        """Stop, tear the executor down and destroy the nodes (idempotent)."""
        self.stop()
        try:
            self.executor.destroy()
        except Exception:
            pass
        for node in self.nodes.values():
            try:
                node.destroy_node()
            except Exception:
                pass
        self.nodes.clear()


class _NoSafety:
    """Stand-in when the safety node is not active: nothing is ever commanded (the robot then
    holds by its own command timeout: fail closed)."""

    def process_state(self, stamp_ns: int, seq: int, q: Any, dq: Any) -> None:
        """Nothing to do."""

    def process_action(self, seq: int) -> None:
        """Nothing to do."""

    def read_command(self, out: Any) -> int:
        """No command (-1)."""
        return -1


def _failure_reason(node: Any, step: str) -> str:
    why = node.last_error  # (LabelledLifecycleNode: every node of the package has it)
    return f'{step} failed' + (f': {why}' if why else ' (see the node log)')


def compose(
    config: AppConfig,
    keys: list[str],
    *,
    context: Any = None,
    namespace: str = '',
    cli_args: list[str] | None = None,
    intra_process: bool | None = None,
    direct: bool | None = None,
) -> Composition:
    """Build the nodes `keys` (see :data:`NODE_CLASSES`) in one executor.

    Args:
        config: the validated app config shared by all nodes.
        keys: node keys in start order (:func:`select_nodes`).
        context: rclpy context (default: the global one, already initialised).
        namespace: namespace of every node ('' = none / whatever ``-r __ns:=`` says).
        cli_args: extra ROS arguments for every node (``['--ros-args', '-r', 'a:=b']``).
        intra_process: policy -> safety over the in-process channel (default: ``control.intra_process``).
        direct: run the direct :class:`~rt_safe_rl.rt.cycle.ControlCycle` (default: when
            ``sim_robot`` is composed). Forces ``intra_process``; the safety and policy nodes
            then have no ``joint_states`` subscription (the cycle feeds them; the observer mirror
            of the state must not reach them).

    Raises:
        RtSafeRlError: a node constructor rejected the config.
    """
    from rt_safe_rl.nodes.process_stats import attach_process_stats
    from rt_safe_rl.rt.executor import RtExecutor

    intra = config.control.intra_process if intra_process is None else intra_process
    use_direct = ('sim_robot' in keys) if direct is None else bool(direct and 'sim_robot' in keys)
    if use_direct:
        intra = True
    kwargs: dict[str, Any] = {}
    if context is not None:
        kwargs['context'] = context
    nodes: dict[str, Any] = {}
    try:
        for key in keys:
            args = list(cli_args or [])
            if args:
                kwargs['cli_args'] = args
            else:
                kwargs.pop('cli_args', None)
            nodes[key] = node_class(key)(config=config, namespace=namespace, intra_process=intra, **kwargs)
            if use_direct and key in ('sim_robot', 'policy', 'safety'):
                nodes[key].direct_cycle = True
        executor = RtExecutor(config.rt, context=context)
        for node in nodes.values():
            executor.add_node(node)
        attach_process_stats(executor, list(nodes.values()), config)
    except BaseException:
        for node in nodes.values():
            node.destroy_node()
        raise
    return Composition(config=config, nodes=nodes, executor=executor, context=context, direct=use_direct)


def add_set_option(parser: argparse.ArgumentParser, dest: str) -> None:
    """Add the repeatable ``--set KEY=VALUE`` config override (``rt_safe_rl.config.parse_override``)
    to ``parser``; the texts are collected, in order, in the list ``dest``."""
    parser.add_argument(
        '--set',
        dest=dest,
        action='append',
        default=[],
        metavar='KEY=VALUE',
        help='override a config value, e.g. --set safety.ssm.reaction_time_s=0.2 (repeatable)',
    )


def build_arg_parser(prog: str, description: str | None = None) -> argparse.ArgumentParser:
    """Options shared by ``bringup`` and ``demo``."""
    ap = argparse.ArgumentParser(prog=prog, description=description or __doc__.split('\n\n')[0])
    ap.add_argument('--config', default=None, help='YAML config (default: the shipped config/default.yaml)')
    add_set_option(ap, 'overrides')
    ap.add_argument('--namespace', default='', help='namespace of every composed node')
    ap.add_argument('--profile', default=None, help='development|production|edge|cloud or an overlay YAML')
    return ap


def config_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> AppConfig:
    """Load the config named by ``--config`` with ``--set`` overrides (and `extra`) merged in."""
    overrides: dict[str, Any] = dict(extra or {})
    for text in args.overrides:
        overrides = deep_merge(overrides, parse_override(text))
    cfg = load_config(args.config, overrides or None, profile=getattr(args, 'profile', None))
    startup_checks(cfg, log=lambda m: print(m, file=sys.stderr))
    return cfg


def split_ros_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``argv`` into (own options, ROS args starting at ``--ros-args``)."""
    if '--ros-args' in argv:
        i = argv.index('--ros-args')
        return argv[:i], argv[i:]
    return argv, []


def main(argv: list[str] | None = None) -> int:
    """`bringup` / `ros2 run rt_safe_rl bringup` entry point; returns the exit code."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    signals.install()
    own, ros_args = split_ros_args(list(sys.argv[1:] if argv is None else argv))
    ap = build_arg_parser('bringup')
    ap.add_argument('--sim', action='store_true', help='also compose the simulated robot, human and operator')
    ap.add_argument('--no-monitor', action='store_true', help='do not compose the monitor node')
    ap.add_argument(
        '--no-policy',
        action='store_true',
        help='do not compose the policy node (safety commands a stop / operator only)',
    )
    ap.add_argument('--duration', type=float, default=0.0, help='run this many seconds (0 = until Ctrl-C)')
    args = ap.parse_args(own)
    comp: Composition | None = None
    try:
        cfg = config_from_args(args)
        rclpy.init(args=['bringup', *ros_args], signal_handler_options=SignalHandlerOptions.NO)
        keys = select_nodes(
            with_sim=args.sim, with_monitor=not args.no_monitor, with_policy=not args.no_policy
        )
        comp = compose(cfg, keys, namespace=args.namespace)
        comp.start(log=lambda m: print(f'bringup: {m}', file=sys.stderr))
        print(
            f'bringup: running {", ".join(comp.active) or "no active node"} from {cfg.source}'
            f' (Ctrl-C to stop)',
            file=sys.stderr,
        )
        with signals.wake_on_signal(comp.executor.shutdown):  # SIGINT/SIGTERM: controlled stop
            comp.executor.spin(args.duration if args.duration > 0 else None)
        if signals.received() is not None:
            why, err = f'bringup: {signals.signal_name(signals.received())}', sys.stderr
            signals.stop_and_hold(comp.nodes.values(), comp.executor, why, log=lambda m: print(m, file=err))
    except KeyboardInterrupt:
        pass
    except RtSafeRlError as err:
        print(f'bringup: error: {err}', file=sys.stderr)
        return 2
    finally:
        if comp is not None:
            comp.executor.shutdown()
            comp.destroy()
        if rclpy.ok():
            rclpy.try_shutdown()
    return 1 if comp is not None and comp.errors else 0


if __name__ == '__main__':
    sys.exit(main())
