"""Shared plumbing of the simulator nodes (sim_robot, sim_human, sim_operator): the common
constructor (``config`` / ``config_file`` parameter / ``autostart``) and the executable ``main``.

Thin ROS glue only; the simulation itself lives in :mod:`rt_safe_rl.sim`. Not RT code.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any, Protocol

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions

from rt_safe_rl import signals
from rt_safe_rl.config import AppConfig, load_config
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.nodes._args import check_node_args
from rt_safe_rl.rt.executor import RtExecutor
from rt_safe_rl.rt.placement import placement_from_parameters


class LabelledLifecycleNode(LifecycleNode):
    """LifecycleNode whose current state reads as its label (what :func:`run_node` and the
    transitions below check): the one base of every node in this package."""

    last_error: str = ''
    """Why the last configure / activate (or input) failed, one line; '' = nothing failed. Each
    node sets it where it fails; :func:`run_node` and ``bringup.compose`` report it."""

    @property
    def lifecycle_state(self) -> str:
        """Label of the current lifecycle state ('unconfigured', 'inactive', 'active', ...)."""
        return str(self._state_machine.current_state[1])


class SimNodeBase(LabelledLifecycleNode):
    """LifecycleNode with the package's common constructor contract (DEVELOPERS.md).

    ``config=None`` reads the read-only ``config_file`` parameter ('' = the shipped default) at
    construction, so a bad file fails before anything starts (``ConfigError`` naming file and key).
    """

    def __init__(
        self,
        node_name: str,
        *,
        config: AppConfig | None = None,
        namespace: str = '',
        intra_process: bool = False,
        **node_kwargs: Any,
    ) -> None:
        super().__init__(node_name, namespace=namespace, **node_kwargs)
        self.intra_process = intra_process
        self.declare_parameter(
            'config_file',
            '',
            ParameterDescriptor(
                description='YAML config (config/default.yaml layout); empty = the shipped default',
                read_only=True,
            ),
        )
        if config is None:
            config = load_config(self.get_parameter('config_file').value or None)
        self.app: AppConfig = config
        self.declare_parameter(
            'autostart',
            bool(config.control.autostart),
            ParameterDescriptor(description='executable: configure + activate on start', read_only=True),
        )

    def rt_tasks(self) -> list[Any]:
        """RT tasks of this node (created at configure); empty by default."""
        return []

    def trigger_deactivate(self) -> TransitionCallbackReturn:
        """Deactivate; a node that is not active (e.g. its configure failed) has nothing to
        deactivate: SUCCESS without rclpy's "Unable to start transition 4" error."""
        if self.lifecycle_state != 'active':
            return TransitionCallbackReturn.SUCCESS
        return super().trigger_deactivate()

    def trigger_cleanup(self) -> TransitionCallbackReturn:
        """Clean up; an unconfigured node has nothing to clean up (SUCCESS, nothing logged)."""
        if self.lifecycle_state != 'inactive':
            return (
                TransitionCallbackReturn.SUCCESS
                if self.lifecycle_state == 'unconfigured'
                else (TransitionCallbackReturn.FAILURE)
            )
        return super().trigger_cleanup()

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release what configure created (:meth:`_release`)."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Same as cleanup."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        """Disable tasks, destroy I/O, drop the loaded state (override; idempotent)."""


class PeriodicSimNode(SimNodeBase):
    """A simulator node driven by one PeriodicTask ``self._task`` that the subclass creates in
    ``on_configure``: enabled on activate (``self._t0_ns`` is reset so the scenario's time starts at
    the first tick), disabled on deactivate, released with the node's ROS entities on cleanup and
    shutdown (subclasses release theirs in :meth:`_release_entities`)."""

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        self._task: Any = None
        self._t0_ns = 0
        super().__init__(node_name, **kwargs)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the periodic task."""
        ret = super().on_activate(state)
        self._t0_ns = 0
        if self._task is not None:
            self._task.enabled = True
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the periodic task."""
        if self._task is not None:
            self._task.enabled = False
        return super().on_deactivate(state)

    def _release(self) -> None:
        """Release the task and the node's publishers/subscriptions."""
        if self._task is not None:
            self._task.enabled = False
            self._task = None
        self._release_entities()

    def _release_entities(self) -> None:
        """Destroy the subclass's publishers/subscriptions (override)."""

    def rt_tasks(self) -> list[Any]:
        """The periodic task (after configure)."""
        return [self._task] if self._task is not None else []


class RunnableNode(Protocol):
    """What :func:`run_node` needs of a node: a LifecycleNode with ``app`` (the AppConfig), an
    ``autostart`` parameter and ``lifecycle_state`` (:class:`SimNodeBase` and ``MonitorNode``)."""

    last_error: str

    @property
    def app(self) -> Any: ...

    @property
    def lifecycle_state(self) -> str: ...

    def get_parameter(self, name: str) -> Any: ...

    def trigger_configure(self) -> TransitionCallbackReturn: ...

    def trigger_activate(self) -> TransitionCallbackReturn: ...

    def destroy_node(self) -> None: ...


def run_node(
    prog: str,
    factory: Callable[[], RunnableNode],
    argv: list[str] | None = None,
    *,
    summary: str = '',
    start: Callable[[str, Any, Any], int | None] | None = None,
    finish: Callable[[Any, int | None], int] | None = None,
    process_stats: bool = True,
) -> int:
    """THE body of every node executable (``main`` of each module in ``nodes/``; a test checks it):
    init rclpy (``argv`` = ROS args, without the program name), build the node, RtExecutor,
    configure + activate when ``autostart``, spin until SIGINT / SIGTERM / shutdown. Both signals
    give the same controlled shutdown (:mod:`rt_safe_rl.signals`): a safety node commands the
    stop and holds it before the node is torn down; exit 0. Expected errors print one line and
    return 2 (no traceback). ``summary``: the --help line ('' = the generic one). Hooks for an
    executable with its own contract (``benchmark_node``): ``start(prog, node, executor)`` replaces
    the autostart step (an int = exit now with it); ``finish(node, signal or None)`` gives the exit
    code once the spin has ended (before the node is destroyed); ``process_stats=False`` does
    not attach the process statistics publisher.
    """
    from rt_safe_rl.nodes.process_stats import attach_process_stats

    early = check_node_args(
        prog,
        argv,
        summary
        or f'{prog}: rt_safe_rl lifecycle node (configures and activates itself '
        'when the autostart parameter is true).',
    )
    if early is not None:
        return early
    signals.install()
    rclpy.init(
        args=sys.argv if argv is None else [prog, *argv], signal_handler_options=SignalHandlerOptions.NO
    )
    node: RunnableNode | None = None
    executor: Any = None
    sig: int | None = None
    try:
        node = factory()
        executor = RtExecutor(placement_from_parameters(node, node.app.rt))
        executor.add_node(node)
        if process_stats:
            attach_process_stats(executor, [node], node.app)
        early = (start or _autostart)(prog, node, executor)
        if early is not None:
            return early
        with signals.wake_on_signal(executor.shutdown):
            executor.spin()
        sig = signals.received()
        if sig is not None:
            _stop_on_signal(prog, node, executor, sig)
        if finish is not None:
            return finish(node, sig)
    except (KeyboardInterrupt, ExternalShutdownException):
        sig = signals.received()
        if sig is not None and node is not None and executor is not None:
            _stop_on_signal(prog, node, executor, sig)
        if finish is not None and node is not None:
            return finish(node, sig if sig is not None else signal.SIGINT)
        return 0
    except RtSafeRlError as err:
        print(f'{prog}: error: {err}', file=sys.stderr)
        return 2
    finally:
        if executor is not None:
            executor.destroy()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _autostart(prog: str, node: RunnableNode, executor: Any) -> int | None:
    """Default ``start`` of :func:`run_node`: configure + activate when the ``autostart`` parameter
    is true; the exit code 2 (one line) when either fails, else None (spin)."""
    if node.get_parameter('autostart').value:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            print(f'{prog}: error: configure failed{_why(node)}', file=sys.stderr)
            return 2
        if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            print(f'{prog}: error: activate failed{_why(node)}', file=sys.stderr)
            return 2
    return None
    return 0


def _why(node: RunnableNode) -> str:
    why = node.last_error
    return f': {why}' if why else ' (see the log above)'


def _stop_on_signal(prog: str, node: RunnableNode, executor: Any, sig: int) -> None:
    """The controlled stop after SIGINT/SIGTERM: a safety node commands the stop and holds."""
    if node.lifecycle_state == 'active':
        reason = f'{prog}: {signals.signal_name(sig)}'
        signals.stop_and_hold([node], executor, reason, log=lambda m: print(m, file=sys.stderr))
