"""The naive pipeline, measured beside ours by ``rt-safe-rl bench replay --naive``.

This is the control stack as a user would write it with plain rclpy (cf. rt-measurements.md,
``naive``): separate nodes connected by DDS topics (QoS reliable, depth 10), the default
``SingleThreadedExecutor``, a new message built on every publish, eager torch (default thread
count) fed with ``torch.tensor(list(...))`` and read back with ``.tolist()``, and a list
comprehension clamping to the joint limits:

    bench process                       naive child process (python -m rt_safe_rl.bench.naive)
    NaiveDriver --joint_states--> NaivePolicyNode --policy/action--> NaiveSafetyNode
        ^-------------------------------- command -----------------------------'

The policy node runs the model every ``decimation`` states and holds its last target in
between (the same work as ours). The driver replays the states in lockstep (publish state ``i``,
wait for the command answering it or ``timeout_s``), or paced at a fixed rate like a robot
(``run(rate_hz=...)``), and measures end-to-end latency from just before ``publish`` to the
command's arrival at its DDS reader (``received_timestamp`` of the message info, system clock; the
driver's own callback dispatch, 0.1-0.3 ms on the 2-vCPU VM, is not the pipeline's and is left
out; before 4 Dec 2026 it was counted in). Action and command are
``sensor_msgs/JointState`` whose ``header`` is the state's (the way a tutorial passes a stamp
along): the driver matches the command to its state by ``header.stamp``; no field is repurposed.
Only the end-to-end time is measured (the nodes' own compute times are not visible from outside).
Not RT-safe anywhere, on purpose.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rt_safe_rl.core import stats
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.nodes.msgs import set_stamp, stamp_ns_of

NAMESPACE = 'rt_safe_rl_naive_bench'
READY_TIMEOUT_S = 60.0


class NaiveError(RtSafeRlError):
    """The naive pipeline could not start (child died, no answer, model unreadable)."""


def infer_obs_dim(model: Any) -> int:
    """Input size of a torch model: the second dim of its first 2-D parameter (Linear/LSTM)."""
    for p in model.parameters():
        if p.dim() == 2:
            return int(p.shape[1])
    raise NaiveError('cannot infer the policy input size (no 2-D parameter)')


def _load_model(path: str) -> Any:
    """The policy as a TorchScript module. Nothing else is accepted: a pickled module or
    checkpoint would need ``torch.load(weights_only=False)``, i.e. running code from the file."""
    import torch

    try:
        return torch.jit.load(path, map_location='cpu')
    except Exception as err:  # broad on purpose: report one line
        why = ' '.join(str(err).split())[:160]
        raise NaiveError(
            f'naive pipeline: {path} is not a TorchScript file ({type(err).__name__}: {why}); the naive '
            'pipeline runs TorchScript policies only (pickled modules are never loaded)'
        ) from None


# ---------------------------------------------------------------------------------------------
# child process: the naive policy and safety nodes


def _child_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The child's command line (written by :class:`NaiveRunner`; joint vectors as JSON, rad)."""
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', required=True)
    ap.add_argument('--decimation', type=int, default=20)
    ap.add_argument('--scale', type=float, default=1.0)
    ap.add_argument('--q-min', required=True)
    ap.add_argument('--q-max', required=True)
    ap.add_argument('--default-q', required=True)
    ap.add_argument('--threads', type=int, default=0)
    ap.add_argument('--goal', default='')
    return ap.parse_args(argv)


def _spin_child_nodes(make_nodes: Callable[[], list[Any]]) -> None:
    """Init rclpy, spin the nodes ``make_nodes`` builds on one SingleThreadedExecutor until
    Ctrl-C or the parent process exits (checked every 0.5 s), then destroy them."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    rclpy.init()
    executor = SingleThreadedExecutor()
    nodes = make_nodes()
    for n in nodes:
        executor.add_node(n)
    parent = os.getppid()

    def check_parent() -> None:  # never outlive the benchmark (killed parent -> stop)
        if os.getppid() != parent:
            raise ExternalShutdownException()

    nodes[1].create_timer(0.5, check_parent)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for n in nodes:
            n.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def child_main(argv: Sequence[str] | None = None) -> int:
    """Run the naive policy + safety nodes (``python -m rt_safe_rl.bench.naive ...``)."""
    args = _child_args(argv)

    import torch
    from rclpy.node import Node
    from sensor_msgs.msg import JointState

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model = _load_model(args.model)
    model.eval()
    obs_dim = infer_obs_dim(model)
    q_min = json.loads(args.q_min)
    q_max = json.loads(args.q_max)
    default_q = json.loads(args.default_q)
    goal = json.loads(args.goal) if args.goal else list(default_q)

    class NaivePolicyNode(Node):  # the way the tutorials write it
        def __init__(self) -> None:
            super().__init__('naive_policy', namespace=NAMESPACE)
            self.pub = self.create_publisher(JointState, 'policy/action', 10)
            self.sub = self.create_subscription(JointState, 'joint_states', self.on_state, 10)
            self.last_action = [0.0] * len(default_q)
            self.target = list(default_q)
            self.count = 0

        def on_state(self, msg: Any) -> None:
            if self.count % args.decimation == 0:
                q = list(msg.position)
                obs = (
                    [a - b for a, b in zip(q, default_q, strict=False)]
                    + [v * 0.1 for v in msg.velocity]
                    + [g - a for g, a in zip(goal, q, strict=False)]
                    + self.last_action
                )
                obs = (obs + [0.0] * obs_dim)[:obs_dim]
                x = torch.tensor(obs, dtype=torch.float32).unsqueeze(0)
                with torch.no_grad():
                    action = model(x)[0].tolist()
                self.last_action = action
                self.target = [d + args.scale * a for d, a in zip(default_q, action, strict=False)]
            self.count += 1
            out = JointState()
            out.header = msg.header
            out.position = self.target
            self.pub.publish(out)

    class NaiveSafetyNode(Node):
        def __init__(self) -> None:
            super().__init__('naive_safety', namespace=NAMESPACE)
            self.pub = self.create_publisher(JointState, 'command', 10)
            self.sub = self.create_subscription(JointState, 'policy/action', self.on_action, 10)

        def on_action(self, msg: Any) -> None:
            safe = [min(max(v, lo), hi) for v, lo, hi in zip(msg.position, q_min, q_max, strict=False)]
            out = JointState()
            out.header = msg.header
            out.position = safe
            self.pub.publish(out)

    _spin_child_nodes(lambda: [NaivePolicyNode(), NaiveSafetyNode()])
    return 0


# ---------------------------------------------------------------------------------------------
# bench side


class NaiveRunner:
    """Starts the naive child, replays states through it (lockstep or paced), returns report fields."""

    def __init__(
        self,
        model_path: str,
        joint_names: Sequence[str],
        q_min: Sequence[float],
        q_max: Sequence[float],
        default_q: Sequence[float],
        decimation: int,
        scale: float = 1.0,
        torch_threads: int = 0,
        timeout_s: float = 1.0,
        goal: Sequence[float] | None = None,
    ) -> None:
        if not Path(model_path).is_file():
            raise NaiveError(f'naive pipeline: policy file not found: {model_path}')
        _load_model(model_path)  # refused here in one line, before a child is started
        self.model_path = model_path
        self.joint_names = list(joint_names)
        self.timeout_s = timeout_s
        self._cmd = [
            sys.executable,
            '-m',
            'rt_safe_rl.bench.naive',
            '--model',
            model_path,
            '--decimation',
            str(max(1, decimation)),
            '--scale',
            str(scale),
            '--q-min',
            json.dumps([float(x) for x in q_min]),
            '--q-max',
            json.dumps([float(x) for x in q_max]),
            '--default-q',
            json.dumps([float(x) for x in default_q]),
            '--threads',
            str(torch_threads),
        ]
        if goal is not None:
            self._cmd += ['--goal', json.dumps([float(x) for x in goal])]
        self.description = (
            f'plain rclpy: driver -> naive_policy -> naive_safety -> driver over 3 DDS '
            f'topics (reliable, depth 10), 2 nodes on one SingleThreadedExecutor in a '
            f'child process, '
            f'eager torch ({"default" if torch_threads <= 0 else torch_threads} threads), '
            f'policy every {max(1, decimation)} states, list clamp'
        )

    def run(
        self,
        q: npt.NDArray[np.float64],
        dq: npt.NDArray[np.float64],
        max_messages: int = 0,
        warmup: int = 50,
        rate_hz: float = 0.0,
    ) -> dict[str, Any]:
        """Replay ``q``/``dq`` rows through the child; returns ``{'stages', 'messages', 'lost', ...}``.

        ``rate_hz == 0``: lockstep (publish state ``i``, wait for its command, then the next: the
        pipeline is never offered more than one state, and never waits idle for one). ``rate_hz >
        0``: paced, as a robot or simulator drives it: state ``i`` is published at ``t0 + i /
        rate_hz`` whether or not earlier commands came back (commands matched by stamp; one that
        has not come ``timeout_s`` after the last publish is lost)."""
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import JointState

        n = q.shape[0] if max_messages <= 0 else min(q.shape[0], max_messages)
        ctx = Context()
        # keep Ctrl-C a KeyboardInterrupt (rclpy's handler would only shut the context down)
        rclpy.init(context=ctx, args=[], signal_handler_options=SignalHandlerOptions.NO)
        env = dict(os.environ)
        child = subprocess.Popen(
            self._cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        node = Node('naive_driver', namespace=NAMESPACE, context=ctx)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        got: dict[str, Any] = {'stamp': -1, 't': 0}
        rx: dict[int, int] = {}  # paced: command stamp -> receive time [ns]

        def on_command(msg: Any, info: Any) -> None:
            # arrival at the driver's DDS reader (the robot's side), not this callback's start: the
            # driver's own dispatch is no part of the pipeline (system clock, like the publish time)
            got['t'] = t = int(info['received_timestamp']) or time.time_ns()
            got['stamp'] = stamp = stamp_ns_of(msg)
            rx[stamp] = t

        pub = node.create_publisher(JointState, 'joint_states', 10)
        node.create_subscription(JointState, 'command', on_command, 10)
        e2e = np.full(n, np.nan)
        lost = 0
        complete = True
        t_start = 0
        t_end = 0
        try:
            self._wait_ready(child, pub, executor, got, JointState, q[0], dq[0])
            t_start = time.monotonic_ns()
            if rate_hz > 0:
                lost = self._paced(executor, pub, JointState, q, dq, n, warmup, rate_hz, rx, e2e)
            else:
                lost = self._lockstep(executor, pub, JointState, q, dq, n, warmup, got, e2e)
            t_end = time.monotonic_ns()
        except KeyboardInterrupt:
            complete = False
            t_end = time.monotonic_ns()
        finally:
            _stop_child(child)
            executor.shutdown()
            node.destroy_node()
            if ctx.ok():
                rclpy.shutdown(context=ctx)
        res = self._fields(e2e, lost, complete, t_start, t_end)
        res['mode'] = f'paced {rate_hz:g} Hz' if rate_hz > 0 else 'lockstep'
        if rate_hz > 0:
            res['paced_skipped'] = self.paced_skipped  # grid points the driver was too late for
        return res

    def _lockstep(
        self, executor: Any, pub: Any, msg_type: Any, q: Any, dq: Any, n: int, warmup: int, got: Any, e2e: Any
    ) -> int:
        """Lockstep replay (see :meth:`run`); fills `e2e` [us], returns the number lost."""
        names = list(self.joint_names)
        lost = 0
        for k in range(warmup + n):
            i = k - warmup if k >= warmup else k % n
            msg = self._state(msg_type, names, q[i], dq[i])
            stamp = stamp_ns_of(msg)  # unique per publish: names the state
            t_pub = time.time_ns()
            pub.publish(msg)
            end_s = time.monotonic() + self.timeout_s
            while got['stamp'] != stamp and time.monotonic() < end_s:
                executor.spin_once(timeout_sec=self.timeout_s)
            if k < warmup:
                continue
            if got['stamp'] == stamp:
                e2e[i] = (got['t'] - t_pub) / 1e3
            else:
                lost += 1
        return lost

    def _paced(
        self,
        executor: Any,
        pub: Any,
        msg_type: Any,
        q: Any,
        dq: Any,
        n: int,
        warmup: int,
        rate_hz: float,
        rx: dict[int, int],
        e2e: Any,
    ) -> int:
        """Paced replay at `rate_hz` on an absolute grid (see :meth:`run`), receiving while it
        waits (a driver late by a period or more goes on from the current grid point: no burst;
        ``paced_skipped`` counts the points passed); fills `e2e` [us] from each state's publish
        time to its command's arrival, returns the number lost."""
        names = list(self.joint_names)
        period_ns = round(1e9 / rate_hz)
        mono = time.monotonic_ns
        sent: list[tuple[int, int, int]] = []  # (row, stamp, publish time)
        self.paced_skipped = 0
        next_ns = mono() + period_ns
        for k in range(warmup + n):
            while (rem := next_ns - mono()) > 0:
                executor.spin_once(timeout_sec=rem / 1e9)
            late = mono() - next_ns
            if late >= period_ns:  # the driver fell behind: on to the current grid point, no burst
                self.paced_skipped += late // period_ns
                next_ns += late // period_ns * period_ns
            next_ns += period_ns
            i = k - warmup if k >= warmup else k % n
            msg = self._state(msg_type, names, q[i], dq[i])
            stamp = stamp_ns_of(msg)
            t_pub = time.time_ns()
            pub.publish(msg)
            if k >= warmup:
                sent.append((i, stamp, t_pub))
        end_ns = mono() + round(self.timeout_s * 1e9)
        last = sent[-1][1] if sent else -1
        while last not in rx and (rem := end_ns - mono()) > 0:
            executor.spin_once(timeout_sec=rem / 1e9)
        lost = 0
        for i, stamp, t_pub in sent:
            t = rx.get(stamp)
            if t is None:
                lost += 1
            else:
                e2e[i] = (t - t_pub) / 1e3
        return lost

    def _wait_ready(
        self,
        child: subprocess.Popen[bytes],
        pub: Any,
        executor: Any,
        got: dict[str, Any],
        msg_type: Any,
        q0: Any,
        dq0: Any,
    ) -> None:
        """Readiness: the child imports torch and discovers the topics; ping it with the state
        ``q0``/``dq0`` until its command answers (``got``), for at most ``READY_TIMEOUT_S``."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if child.poll() is not None:
                err = (child.stderr.read() if child.stderr else b'').decode(errors='replace').strip()
                raise NaiveError(
                    f'naive pipeline process exited ({child.returncode}): '
                    f'{err.splitlines()[-1] if err else "no output"}'
                )
            msg = self._state(msg_type, list(self.joint_names), q0, dq0)
            pub.publish(msg)
            ping = stamp_ns_of(msg)
            end = time.monotonic() + 0.2
            while time.monotonic() < end and got['stamp'] != ping:
                executor.spin_once(timeout_sec=0.05)
            if got['stamp'] == ping:
                return
        raise NaiveError(f'naive pipeline did not answer within {READY_TIMEOUT_S:.0f} s')

    def _fields(
        self, e2e: npt.NDArray[np.float64], lost: int, complete: bool, t_start: int, t_end: int
    ) -> dict[str, Any]:
        """The report fields from the e2e latencies (us, NaN = lost) and the run's start/end (ns)."""
        measured = np.isfinite(e2e)
        wall_s = max(1e-9, (t_end - t_start) / 1e9)
        return {
            'description': self.description,
            'complete': complete,
            'messages': int(measured.sum()),
            'lost': int(lost),
            'throughput_msgs_per_s': float(measured.sum()) / wall_s if t_start else math.nan,
            'stages': {'e2e_us': stats.summarize(e2e)},
            '_samples': e2e[measured],
        }

    _last_stamp_ns = 0
    paced_skipped = 0

    @classmethod
    def _state(cls, msg_type: Any, names: list[str], q: Any, dq: Any) -> Any:
        """A joint state stamped now (wall clock, strictly increasing per call)."""
        msg = msg_type()
        stamp = max(time.time_ns(), cls._last_stamp_ns + 1)
        cls._last_stamp_ns = stamp
        set_stamp(msg, stamp)
        msg.name = names
        msg.position = [float(x) for x in q]
        msg.velocity = [float(x) for x in dq]
        return msg


def _stop_child(child: subprocess.Popen[bytes]) -> None:
    """Terminate the naive child; kill it if it has not exited within 5 s."""
    child.terminate()
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=5)


def add_misses(fields: dict[str, Any], deadline_ns: int, samples_us: npt.NDArray[np.float64]) -> None:
    """Add ``misses``/``miss_rate`` against ``deadline_ns`` to naive report fields."""
    m = stats.deadline_misses(samples_us * 1e3, deadline_ns) + int(fields.get('lost', 0))
    fields['misses'] = int(m)
    total = int(fields.get('messages', 0)) + int(fields.get('lost', 0))
    fields['miss_rate'] = m / total if total else math.nan


if __name__ == '__main__':
    sys.exit(child_main())
