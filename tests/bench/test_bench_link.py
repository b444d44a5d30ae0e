"""The link bench (``make bench BENCH=link``) measures the board's own top: its fabric
clock and core come from the board definition, so its figures follow the board."""

import pytest

from copperline.boards.registry import get_board
from copperline.firmware.board_interface import DEFAULT_BAUD
from tests.bench import bench_link


@pytest.fixture(autouse=True)
def _restore():
    saved = (bench_link.BOARD, bench_link.CLOCK, bench_link.BAUD, bench_link.BYTE_S)
    yield
    bench_link.BOARD, bench_link.CLOCK, bench_link.BAUD, bench_link.BYTE_S = saved


def test_clock_and_baud_come_from_the_board():
    board = bench_link.configure([])
    assert board.name == "icebreaker"
    assert bench_link.CLOCK == get_board("icebreaker").clock_hz
    assert bench_link.BAUD == DEFAULT_BAUD and bench_link.BYTE_S == 10 / DEFAULT_BAUD
    bench_link.configure(["--board", "ulx3s-25f", "--baud", "1000000"])
    assert (bench_link.BOARD, bench_link.CLOCK) == ("ulx3s-25f", get_board("ulx3s-25f").clock_hz)
    assert bench_link.BAUD == 1_000_000


@pytest.mark.parametrize("argv,says", [(["--board", "icebraker"], "did you mean 'icebreaker'"),
                                       (["--baud", "7000000"], "--baud 7000000: ")])
def test_a_board_or_baud_the_build_refuses_is_a_usage_error(capsys, argv, says):
    with pytest.raises(SystemExit) as exc:
        bench_link.configure(argv)
    assert exc.value.code == 2 and says in capsys.readouterr().err
