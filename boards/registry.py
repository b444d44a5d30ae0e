"""The supported boards, by name."""

from __future__ import annotations

import difflib

from copperline.boards.common import Board, BoardError


def all_boards() -> list[Board]:
    from copperline.boards import icebreaker, ulx3s
    return [icebreaker.BOARD, *ulx3s.BOARDS]


def board_names() -> list[str]:
    return [b.name for b in all_boards()] + [a for b in all_boards() for a in b.aliases]


def get_board(name: str) -> Board:
    """The board called ``name`` (or an alias such as ``ulx3s`` for the 85F)."""
    key = name.lower()
    for b in all_boards():
        if key == b.name or key in b.aliases:
            return b
    close = difflib.get_close_matches(key, board_names(), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise BoardError(f"unknown board {name!r}; {hint}known boards: {', '.join(board_names())}")
