"""`rt-safe-rl` dispatcher: help and usage exit codes, unknown commands, one-line expected errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from rt_safe_rl.cli import BENCHES, COMMANDS, main


@pytest.mark.parametrize('argv', [['--help'], ['-h'], ['bench', '--help'], ['bench', '-h']])
def test_help_prints_usage_and_exits_0(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith('usage: rt-safe-rl')
    assert all(name in out for name in (*COMMANDS, *BENCHES))


@pytest.mark.parametrize(
    ('argv', 'message'),
    [
        ([], ''),
        (['bench'], ''),
        (['bogus'], "unknown command 'bogus'"),
        (['bench', 'bogus'], "unknown benchmark 'bogus'"),
    ],
)
def test_missing_or_unknown_command_exits_2_with_usage(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert 'usage: rt-safe-rl' in text and message in text


def test_config_error_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / 'bad.yaml'
    bad.write_text('demo: [1,\n')
    assert main(['demo', '--config', str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('rt-safe-rl: error: ') and 'not valid YAML' in err
    assert err.count('\n') == 1 and 'Traceback' not in err
