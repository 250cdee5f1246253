"""rosbag2 reading for the replay bench: synthesized arm bags, the shared third-party bags, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rt_safe_rl.bench import bag
from rt_safe_rl.core.errors import BagError

ARM = [f'joint{i}' for i in range(1, 8)]
BAGS = 'bags'


def write_arm_bag(path: Path, n: int = 500, rate_hz: float = 1000.0, names: list[str] | None = None) -> Path:
    """A synthesized arm JointState bag (+ human points at 1/10 the rate)."""
    names = names or ARM
    period = int(1e9 / rate_hz)
    with bag.BagWriter(path) as w:
        w.add_topic('/joint_states', bag.JOINT_STATE)
        w.add_topic('/human/position', bag.POINT_STAMPED)
        for i in range(n):
            t = 1_000_000_000 + i * period
            q = np.sin(np.arange(len(names)) + i * 1e-3)
            w.write_joint_state('/joint_states', t, i * period, names, q, np.cos(q), frame_id=str(i))
            if i % 10 == 0:
                w.write_point('/human/position', t, i * period, [1.0 + i * 1e-3, 0.0, 0.5])
    return path


def test_roundtrip_synthesized_bag(tmp_path: Path) -> None:
    """Written JointState/PointStamped come back exactly, in robot order, with receive times."""
    p = write_arm_bag(tmp_path / 'arm', n=300)
    info = bag.inspect_bag(p)
    assert info.storage == 'mcap' and info.message_count == 330 and len(info.sha256) == 64
    assert bag.select_state_topic(info).name == '/joint_states'
    # reversed robot order: columns are permuted to the robot's order
    s = bag.load_joint_states(info, '/joint_states', list(reversed(ARM)))
    assert s.n == 300 and s.rate_hz() == pytest.approx(1000.0)
    expect = np.sin(np.arange(7) + 5e-3)
    np.testing.assert_array_equal(s.q[5], expect[::-1])
    np.testing.assert_array_equal(s.dq[5], np.cos(expect)[::-1])
    assert s.recv_ns[1] - s.recv_ns[0] == 1_000_000
    assert s.frame_seq[5] == 5  # header.frame_id carries the state seq
    h = bag.load_side_stream(info, bag.auto_side_topic(info, '', 'human/position', bag.POINT_STAMPED))
    assert h.n == 30 and h.values.shape == (30, 3) and h.values[1, 0] == pytest.approx(1.01)
    assert bag.auto_side_topic(info, '-', 'human/position', bag.POINT_STAMPED) == ''
    assert bag.load_side_stream(info, '').n == 0
    assert bag.load_joint_states(info, '/joint_states', ARM, max_messages=10).n == 10
    with pytest.raises(BagError, match='already exists'):
        bag.BagWriter(p)


def test_name_mismatch_and_joint_map(tmp_path: Path) -> None:
    """Names not matching the robot: clear error naming both sides; an explicit map replays."""
    p = write_arm_bag(tmp_path / 'two', n=50, names=['left', 'right'])
    info = bag.inspect_bag(p)
    with pytest.raises(BagError, match=r"has joints \['left', 'right'\]; the policy expects"):
        bag.load_joint_states(info, '/joint_states', ARM)
    s = bag.load_joint_states(
        info,
        '/joint_states',
        ARM,
        joint_map={'left': 'joint2', 'right': 'joint4'},
        fill_q_rad={'joint1': 0.5},
    )
    assert s.mapped and s.q.shape == (50, 7)
    assert np.all(s.q[:, 0] == 0.5) and np.all(s.q[:, 2] == 0.0)
    np.testing.assert_array_equal(s.q[:, 1], np.sin(np.arange(50) * 1e-3))
    with pytest.raises(BagError, match='not robot joints'):
        bag.load_joint_states(info, '/joint_states', ARM, joint_map={'left': 'nope'})
    with pytest.raises(BagError, match='not in /joint_states'):
        bag.load_joint_states(info, '/joint_states', ARM, joint_map={'middle': 'joint1'})


@pytest.mark.parametrize('frac', [0.1, 0.5, 0.95])
def test_truncated_bag_is_a_clear_error(tmp_path: Path, frac: float) -> None:
    """A truncated mcap fails with BagError (never a traceback from the reader)."""
    src = write_arm_bag(tmp_path / 'full', n=300)
    dst = tmp_path / 'cut'
    dst.mkdir()
    shutil.copy(src / 'metadata.yaml', dst / 'metadata.yaml')
    f = next(src.glob('*.mcap'))
    data = f.read_bytes()
    (dst / f.name).write_bytes(data[: int(len(data) * frac)])
    with pytest.raises(BagError, match=r'corrupt|truncated'):
        info = bag.inspect_bag(dst)
        bag.load_joint_states(info, '/joint_states', ARM)


@pytest.mark.parametrize('frac', [0.3, 0.5, 0.8])
def test_corrupt_middle_is_a_clear_error(tmp_path: Path, frac: float) -> None:
    """Zeroed bytes inside the data: BagError (a decode failure or messages missing), never silence."""
    src = write_arm_bag(tmp_path / 'full', n=2000)
    dst = tmp_path / 'bad'
    shutil.copytree(src, dst)
    f = next(dst.glob('*.mcap'))
    data = bytearray(f.read_bytes())
    i = int(len(data) * frac)
    data[i : i + 2000] = bytes(2000)
    f.write_bytes(bytes(data))
    with pytest.raises(BagError, match=r'corrupt|truncated'):
        info = bag.inspect_bag(dst)
        bag.load_joint_states(info, '/joint_states', ARM)


def test_missing_and_not_a_bag(tmp_path: Path) -> None:
    """Missing path, empty dir, wrong suffix and a garbage .db3 are clear errors."""
    with pytest.raises(BagError, match='bag not found'):
        bag.inspect_bag(tmp_path / 'nope')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(BagError, match=r'no metadata\.yaml and no \.mcap/\.db3'):
        bag.inspect_bag(tmp_path / 'empty')
    (tmp_path / 'x.txt').write_text('hi')
    with pytest.raises(BagError, match='not a rosbag2 storage file'):
        bag.inspect_bag(tmp_path / 'x.txt')
    (tmp_path / 'junk').mkdir()
    (tmp_path / 'junk' / 'x.db3').write_bytes(b'garbage' * 100)
    with pytest.raises(BagError, match='cannot open bag'):
        bag.inspect_bag(tmp_path / 'junk')


def test_walker_bag_2_joints_29hz(shared_data: Path) -> None:
    """The shared TurtleBot3 walker bag (sqlite3): 2 wheel joints at ~29 Hz, unknown gazebo type listed."""
    info = bag.inspect_bag(shared_data / BAGS / 'syzygy21__walker_data_2024_11_23_15_54_49')
    assert info.storage == 'sqlite3'
    gz = info.topic('/performance_metrics')
    assert gz is not None and not gz.decodable and 'unknown type' in gz.describe()
    st = bag.select_state_topic(info)
    assert st.name == '/joint_states' and st.count == 830
    with pytest.raises(BagError, match=r'wheel_left_joint.*policy expects'):
        bag.load_joint_states(info, st.name, ARM)
    s = bag.load_joint_states(
        info, st.name, ARM, joint_map={'wheel_left_joint': 'joint1', 'wheel_right_joint': 'joint2'}
    )
    assert s.n == 830 and 25.0 < s.rate_hz() < 35.0
    assert s.bag_joint_names == ['wheel_left_joint', 'wheel_right_joint']
    with pytest.raises(BagError, match=r"'/performance_metrics'.*expected sensor_msgs/msg/JointState"):
        bag.select_state_topic(info, '/performance_metrics')


def test_split_bag_without_metadata(shared_data: Path) -> None:
    """Split mcap without metadata.yaml: error names the files and the fix; one file alone reads."""
    d = shared_data / BAGS / 'rosbag2_official' / 'rosbag2_py__mcap_reindex_test_bags_multiple_files'
    with pytest.raises(BagError, match=r'split bag without metadata.yaml: found 3 storage files'):
        bag.inspect_bag(d)
    info = bag.inspect_bag(d / 'multiple_files_0.mcap')
    assert info.topic('/chatter') is not None
    with pytest.raises(BagError, match='no sensor_msgs/msg/JointState topic'):
        bag.select_state_topic(info)


def test_service_events_bag(shared_data: Path) -> None:
    """Service-event channels are listed as not replayable; selecting one is a clear error."""
    info = bag.inspect_bag(
        shared_data / BAGS / 'rosbag2_official' / 'rosbag2_tests__mcap_bag_with_topics_and_service_events'
    )
    ev = info.topic('/test_service1/_service_event')
    assert ev is not None and ev.service_event
    with pytest.raises(BagError, match='service events: not replayable'):
        bag.select_state_topic(info)
    with pytest.raises(BagError, match='service-event channel'):
        bag.select_state_topic(info, '/test_service1/_service_event')


def test_unknown_types_bag(shared_data: Path) -> None:
    """test_msgs bag (types defined only in the mcap): no JointState -> clear error listing topics."""
    info = bag.inspect_bag(shared_data / BAGS / 'rosbag2_official' / 'rosbag2_tests__mcap_cdr_test')
    with pytest.raises(BagError, match=r'/array_topic \(test_msgs/msg/Arrays'):
        bag.select_state_topic(info)
    with pytest.raises(BagError, match='no topic'):
        bag.select_state_topic(info, '/joint_states')


def test_talker_parity_mcap_sqlite3(shared_data: Path) -> None:
    """Same 10 /topic messages from the mcap and the sqlite3 talker bags (old QoS metadata)."""
    base = shared_data / BAGS / 'rosbag2_official'
    got = []
    for name in ('rosbag2_py__mcap_talker', 'rosbag2_py__sqlite3_talker'):
        info = bag.inspect_bag(base / name)
        got.append([(t, raw) for _, t, raw in bag.iter_raw(info, ['/topic'])])
    assert len(got[0]) == 10 and got[0] == got[1]
