"""BenchmarkNode: the rosbag2 replay benchmark as a lifecycle node (executable ``benchmark_node``).

* configure: read the config (``config_file``), open the bag (``bag`` parameter; mcap or
  sqlite3), log its topic listing, pick and decode the state/side topics, build our pipeline
  (policy + safety nodes composed in this process, driven by direct calls: see
  :mod:`rt_safe_rl.bench.pipeline`). Any bad input -> FAILURE with the reason logged.
* activate: replay in a worker thread (``rate``: recorded | max | Hz; ``repeat``; ``stress``;
  ``naive``); when done, write report.json/md/html/png into ``out_dir`` and publish the summary
  JSON (std_msgs/String) on ``benchmark.results_topic``.
* deactivate: stop the replay at the next message and finalize: the partial results are written
  and published with ``"complete": false``.
* cleanup/shutdown: release the pipeline.

Parameters (read-only unless noted; defaults from the ``benchmark:`` section): ``config_file``,
``bag``, ``rate``, ``repeat``, ``stress``, ``naive``, ``out_dir``, ``state_topic``, ``joint_map``
(``BAG=ROBOT,...``), ``pipeline`` (inprocess | external), ``baseline``, ``autostart``,
``exit_when_done``.
Thin ROS glue; the measurement lives in :mod:`rt_safe_rl.bench.replay`. Not an RT node: its
worker thread *is* the measured loop (it drives the pipeline itself).
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import replace
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from std_msgs.msg import String

from rt_safe_rl.bench import bag as bagmod
from rt_safe_rl.bench.pipeline import naive_runner_for
from rt_safe_rl.bench.replay import (
    finalize_report,
    load_inputs,
    make_pipeline,
    parse_joint_map,
    run_benchmark,
    summary_for_stdout,
)
from rt_safe_rl.bench.report import load_report, plain
from rt_safe_rl.config import load_config
from rt_safe_rl.core.errors import RtSafeRlError
from rt_safe_rl.nodes._benchmark_exec import _finish, _start
from rt_safe_rl.nodes._sim_base import LabelledLifecycleNode, run_node


class BenchmarkNode(LabelledLifecycleNode):
    """Replays a bag through the composed pipeline and reports percentiles (see module doc)."""

    def __init__(
        self,
        *,
        config: Any | None = None,
        node_name: str = 'benchmark',
        namespace: str = '',
        intra_process: bool = True,
        **node_kwargs: Any,
    ) -> None:
        self._app: Any = config
        self._pipeline: Any = None
        self._inputs: Any = None
        self._info: Any = None
        self._cfg: Any = None
        self._baseline: dict[str, Any] | None = None
        self._pub: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.done = threading.Event()
        self.on_done: Any = None  # called (from the worker thread) when a replay has finished
        self.last_report: dict[str, Any] | None = None
        self.last_error = ''
        super().__init__(node_name, namespace=namespace, **node_kwargs)
        self.intra_process = intra_process

        def ro(desc: str) -> ParameterDescriptor:
            return ParameterDescriptor(description=desc, read_only=True)

        self.declare_parameter('config_file', '', ro('YAML config (default.yaml layout); empty = shipped'))
        if self._app is None:
            self._app = load_config(self.get_parameter('config_file').value or None)
        b = self._app.benchmark
        self.declare_parameter('bag', '', ro('rosbag2 directory or .mcap/.db3 file to replay'))
        self.declare_parameter(
            'rate',
            b.rate,
            ParameterDescriptor(description="'recorded', 'max' or Hz; applies at the next activate"),
        )

        def rw(desc: str) -> ParameterDescriptor:
            return ParameterDescriptor(description=f'{desc}; applies at the next activate')

        self.declare_parameter('repeat', b.repeat, rw('replays (>= 2: determinism)'))
        self.declare_parameter('stress', b.stress_workers, rw('stress workers'))
        self.declare_parameter('naive', b.naive, rw('also run the naive pipeline'))
        self.declare_parameter('out_dir', b.out_dir, ParameterDescriptor(description='report directory'))
        self.declare_parameter('state_topic', b.state_topic, ro('JointState topic of the bag; empty = auto'))
        self.declare_parameter(
            'pipeline',
            b.pipeline,
            ro("'inprocess' (compose policy + safety here) or 'external' (a running pipeline over DDS)"),
        )
        self.declare_parameter('joint_map', '', ro('BAG_JOINT=ROBOT_JOINT,... for another robot'))
        self.declare_parameter('baseline', '', ParameterDescriptor(description='report.json to compare with'))
        self.declare_parameter(
            'autostart', bool(self._app.control.autostart), ro('executable: configure + activate on start')
        )
        self.declare_parameter('exit_when_done', True, ro('executable: exit after the report'))

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def app(self) -> Any:
        """The app config (``config`` or the ``config_file`` parameter's)."""
        return self._app

    def _bench_config(self) -> Any:
        p = self.get_parameter
        changes: dict[str, Any] = {
            'rate': str(p('rate').value),
            'repeat': int(p('repeat').value),
            'stress_workers': int(p('stress').value),
            'naive': bool(p('naive').value),
            'out_dir': str(p('out_dir').value),
            'state_topic': str(p('state_topic').value),
            'progress': False,
            'pipeline': str(p('pipeline').value),
        }
        jm = str(p('joint_map').value)
        if jm:
            changes['joint_map'] = parse_joint_map(jm)
        try:
            return replace(self._app.benchmark, **changes)
        except ValueError as err:
            raise RtSafeRlError(f'benchmark parameters: {err}') from None

    def _fail(self, what: str, err: BaseException) -> TransitionCallbackReturn:
        self.last_error = f'{what}: {err}'
        self.get_logger().error(self.last_error)
        return TransitionCallbackReturn.FAILURE

    # -- lifecycle -------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Open the bag, decode the topics, build the pipeline. FAILURE (logged) on bad input."""
        try:
            self._cfg = self._bench_config()
            path = str(self.get_parameter('bag').value)
            if not path:
                raise RtSafeRlError("parameter 'bag' is empty: set it to a rosbag2 directory or file")
            self._info = bagmod.inspect_bag(path)
            self.get_logger().info(self._info.listing())
            self._pipeline = make_pipeline(self._app, self._cfg)
            self._inputs = load_inputs(self._info, self._cfg, self._pipeline.joint_names, self._app.topics)
        except RtSafeRlError as err:
            self._release()
            return self._fail('configure failed', err)
        self._pub = self.create_lifecycle_publisher(String, self._cfg.results_topic, 1)
        s = self._inputs.states
        self.get_logger().info(f'configured: {s.n} states on {s.topic} ({s.rate_hz():.1f} Hz)')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the replay thread (parameters rate/repeat/stress/naive/out_dir read now)."""
        try:
            self._cfg = self._bench_config()
            base = str(self.get_parameter('baseline').value)
            self._baseline = load_report(base) if base else None
        except RtSafeRlError as err:
            return self._fail('activate failed', err)
        ret = super().on_activate(state)
        self._stop.clear()
        self.done.clear()
        self._thread = threading.Thread(target=self._run, name='benchmark_replay', daemon=True)
        self._thread.start()
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the replay at the next message; the partial report is written and published."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30.0)
            self._thread = None
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the pipeline and the publisher."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop and release everything."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30.0)
            self._thread = None
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
        if self._pub is not None:
            self.destroy_lifecycle_publisher(self._pub)
            self._pub = None

    # -- worker ----------------------------------------------------------------------------------
    def _log_event(self, message: str) -> None:
        self.get_logger().info(message)

    def _run(self) -> None:
        cfg, app = self._cfg, self._app
        try:
            deadline_ns = int(cfg.deadline_us * 1e3) if cfg.deadline_us > 0 else app.control.period_ns
            fields, samples, t_s = run_benchmark(
                self._pipeline,
                self._inputs,
                cfg,
                deadline_ns=deadline_ns,
                naive_runner=naive_runner_for(app, self._pipeline),
                on_event=self._log_event,
                stop_event=self._stop,
                rt_group=app.rt.groups.get('control'),
            )
            argv = ['benchmark_node', str(self.get_parameter('bag').value)]
            base = str(self.get_parameter('baseline').value)
            rep = finalize_report(
                app,
                self._info,
                cfg,
                self._inputs,
                self._pipeline.model_path,
                fields,
                samples,
                t_s,
                argv,
                self._baseline,
                base,
            )
            self.last_report = rep
            summary = json.dumps(plain(summary_for_stdout(rep)))
            if self._pub is not None:
                self._pub.publish(String(data=summary))
            self.get_logger().info(f'report written to {cfg.out_dir}: {summary}')
        except Exception as err:  # broad on purpose: the worker must report, never die silently
            self.last_error = f'replay failed: {type(err).__name__}: {err}'
            self.get_logger().error(self.last_error)
        finally:
            self.done.set()
            if self.on_done is not None:
                self.on_done()


def main(argv: list[str] | None = None) -> int:
    """``benchmark_node`` executable: configure + activate (autostart), exit when the report is done."""
    return run_node(
        'benchmark_node',
        BenchmarkNode,
        argv,
        summary='Replay benchmark as a lifecycle node: -p bag:=DIR '
        'replays a rosbag2 recording through the pipeline and writes the report.',
        start=_start,
        finish=_finish,
        process_stats=False,
    )


if __name__ == '__main__':
    sys.exit(main())
