"""The command blocks of README.md and docs/tutorial.md run as written and print what the
docs show, so the docs cannot go stale.

How a document is written for this test:

* A ```` ```sh ```` block holds commands, one per line (a line ending in ``\\`` goes on;
  blank lines and ``#`` lines are skipped). Each must exit 0.
* A ```` ```console ```` block is a transcript: ``$ COMMAND`` lines, each followed by the
  output it prints (stdout and stderr together). Output lines match line by line, runs of
  spaces counting as one, except that a line ``...`` stands for any lines (or none),
  ``...`` inside a line for any text, and ``~`` before a number for any number (the doc
  shows a typical value: timings, wall-clock times).
* A command ending in ``&`` runs in the background; the next command waits until it has
  printed what the doc shows after it (its "ready" lines; in a ``sh`` block, one line).
* A non-zero exit status fails, unless the doc shows it: the next command is ``echo $?``.
* ``<!-- doctest: skip: REASON -->`` on the line before a block: not run, and the test
  reports REASON. ``<!-- doctest: slow: REASON -->``: run by a separate test marked
  ``slow``. Other fenced blocks (plain, ``python``) are not run.

Each document runs in one bash session, block after block, in a scratch directory that
holds ``examples/`` and shares the repository's ``build/`` cache. The test starts a copperd
(soft backend) on a scratch socket first: the docs' ``/run/copperline/copperd.sock``
means that socket, and ``make run`` shows that daemon's banner. ``127.0.0.1:7654`` (the
virtual board's port) and ``127.0.0.1:7655`` (a second one's, with the display) are
replaced by free ports.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "docs/tutorial.md"]
BIN = Path(sys.executable).parent
DEFAULT_SOCKET = "/run/copperline/copperd.sock"
DEFAULT_BOARD = "127.0.0.1:7654"
DEFAULT_VIDEO_BOARD = "127.0.0.1:7655"
MARKER = re.compile(r"^<!--\s*doctest:\s*(skip|slow):\s*(.+?)\s*-->$")
FENCE = re.compile(r"^```(\w*)\s*$")
#: Per command (a board build takes 20-160 s, a first simulator compile up to a minute).
COMMAND_TIMEOUT_S = 600
#: For a background command to print its ready lines (a first Verilator compile ~25 s).
READY_TIMEOUT_S = 240
DONE = "__copperline_doctest_done__"


@dataclass
class Command:
    text: str                       # the shell text (continuation lines included)
    expect: list[str] | None        # the output the doc shows (None: not checked)
    line: int                       # where it is in the document


@dataclass
class Block:
    doc: str
    line: int
    kind: str                       # "sh" or "console"
    commands: list[Command] = field(default_factory=list)
    skip: str | None = None
    slow: str | None = None

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def parse(doc: str) -> list[Block]:
    """The ``sh`` and ``console`` blocks of ``doc`` (a path relative to the repo)."""
    lines = (ROOT / doc).read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group(1):
            i += 1
            continue
        start, kind = i, m.group(1)
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        if kind not in ("sh", "console"):
            continue
        b = Block(doc, start + 1, kind)
        mark = MARKER.match(lines[start - 1].strip()) if start else None
        if mark:
            setattr(b, mark.group(1), mark.group(2))
        b.commands = _commands(b, body)
        blocks.append(b)
    return blocks


def _commands(b: Block, body: list[str]) -> list[Command]:
    out: list[Command] = []
    cont = False                    # the previous command line ended in a backslash
    for n, raw in enumerate(body, start=b.line + 1):
        if cont:
            out[-1].text += "\n" + raw
            cont = raw.endswith("\\")
            continue
        if b.kind == "sh":
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            out.append(Command(raw, None, n))
        elif raw.startswith("$ "):
            out.append(Command(raw[2:], [], n))
        else:
            assert out, f"{b.doc}:{n}: output before the first '$ ' command"
            out[-1].expect.append(raw)
            continue
        cont = raw.endswith("\\")
    for c in out:                   # a blank line before the next command is layout
        while c.expect and not c.expect[-1].strip():
            c.expect.pop()
    return out


# ---------------------------------------------------------------- output patterns ----------

_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"


def _line_regex(expected: str) -> re.Pattern:
    parts = re.split(r"(\.\.\.|~-?\d+(?:\.\d+)?)", " ".join(expected.split()))
    rx = "".join(".*?" if p == "..." else _NUMBER if p.startswith("~") else re.escape(p)
                 for p in parts)
    return re.compile(rx + r"\Z")


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` lines are what ``expected`` shows (the conventions above)."""
    exp = list(expected)
    act = [" ".join(a.split()) for a in actual]
    while act and not act[-1]:
        act.pop()
    while exp and not exp[-1].strip():
        exp.pop()
    memo: dict[tuple[int, int], bool] = {}

    def m(i: int, j: int) -> bool:
        if (i, j) in memo:
            return memo[i, j]
        if i == len(exp):
            r = j == len(act)
        elif exp[i].strip() == "...":
            r = m(i + 1, j) or (j < len(act) and m(i, j + 1))
        else:
            r = j < len(act) and bool(_line_regex(exp[i]).match(act[j])) and m(i + 1, j + 1)
        memo[i, j] = r
        return r
    return m(0, 0)


# ---------------------------------------------------------------- the session --------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Session:
    """One bash for a document, in a scratch directory, and the copperd it talks to."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        work = tmp / "work"
        work.mkdir()
        (work / "examples").symlink_to(ROOT / "examples")
        (ROOT / "build").mkdir(exist_ok=True)
        (work / "build").symlink_to(ROOT / "build")     # compiled simulators are cached
        self.sock = str(tmp / "copperd.sock")
        self.subst = {DEFAULT_SOCKET: self.sock, DEFAULT_BOARD: f"127.0.0.1:{_free_port()}",
                      DEFAULT_VIDEO_BOARD: f"127.0.0.1:{_free_port()}"}
        env = {k: v for k, v in os.environ.items() if k != "COPPERD_SOCKET"}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        self.daemon_log = tmp / "copperd.log"       # a file: a pipe nobody reads would fill
        with open(self.daemon_log, "w") as log:
            self.daemon = subprocess.Popen([str(BIN / "copperd"), "--backend", "soft",
                                            "--socket", self.sock], stdout=log,
                                           stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True)
        self.banner = self._read_banner()
        self.bash = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=work, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._buf = bytearray()
        self._cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self._bg = 0

    def _read_banner(self) -> list[str]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lines = self.daemon_log.read_text().splitlines()
            if any("stop with Ctrl-C" in line for line in lines):
                return lines
            assert self.daemon.poll() is None, f"copperd exited: {lines}"
            time.sleep(0.05)
        raise AssertionError(f"no copperd banner within 60 s: {self.daemon_log.read_text()}")

    def _read(self) -> None:
        while True:
            data = os.read(self.bash.stdout.fileno(), 65536)
            with self._cv:
                if not data:
                    self._buf += f"\n{DONE} eof\n".encode()
                self._buf += data
                self._cv.notify_all()
            if not data:
                return

    def sub(self, text: str) -> str:
        for k, v in self.subst.items():
            text = text.replace(k, v)
        return text

    def run(self, text: str) -> tuple[int, list[str]]:
        """Run one command in the session: (exit status, output lines)."""
        # braces keep assignments in this shell; stdin is not the session's script
        script = (f"{{ {text}\n}} < /dev/null\n__rc=$?; printf '\\n{DONE} %d\\n' $__rc; "
                  "(exit $__rc)\n")
        with self._cv:
            self._buf.clear()
        self.bash.stdin.write(script.encode())
        self.bash.stdin.flush()
        pattern = re.compile(rf"\n{DONE} (\d+|eof)\n".encode())
        with self._cv:
            ok = self._cv.wait_for(lambda: pattern.search(self._buf), COMMAND_TIMEOUT_S)
            assert ok, f"no end within {COMMAND_TIMEOUT_S} s; output so far:\n{self._buf.decode()}"
            m = pattern.search(self._buf)
            out = self._buf[:m.start()].decode(errors="replace")
        assert m.group(1) != b"eof", f"the shell ended:\n{out}"
        return int(m.group(1)), out.splitlines()

    def background(self, text: str, ready: list[str]) -> list[str]:
        """Start ``text`` in the background; wait until its output shows ``ready``."""
        self._bg += 1
        log = self.tmp / f"background-{self._bg}.log"
        rc, out = self.run(f"{text} > {log} 2>&1 &\necho $!")
        assert rc == 0 and out, out
        pid = int(out[-1])
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            got = log.read_text(errors="replace").splitlines() if log.exists() else []
            if got and matches(ready + ["..."], got):     # more may follow: it runs on
                return got
            if not _alive(pid):
                raise AssertionError(f"{text!r} ended before it was ready; it printed:\n"
                                     + log.read_text(errors="replace"))
            time.sleep(0.1)
        raise AssertionError(f"{text!r}: not ready within {READY_TIMEOUT_S} s; it printed:\n"
                             + log.read_text(errors="replace"))

    def close(self) -> None:
        for p in (self.bash, self.daemon):     # each in its own process group: ours only
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in (self.bash, self.daemon):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped by bash, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


_BACKGROUND = re.compile(r"^(?P<cmd>.*[^&])&\s*(?:#.*)?$", re.S)


def run_blocks(session: Session, blocks: list[Block]) -> None:
    for b in blocks:
        cmds = b.commands
        for k, c in enumerate(cmds):
            text = session.sub(c.text)
            expect = None if c.expect is None else [session.sub(e) for e in c.expect]
            where = f"{b.doc}:{c.line}: $ {c.text}"
            bg = _BACKGROUND.match(text)
            if text.strip() == "make run":
                rc, out = 0, session.banner     # the daemon the test started
            elif bg:
                rc, out = 0, session.background(bg.group("cmd").rstrip(), expect or [])
            else:
                rc, out = session.run(text)
            shown = k + 1 < len(cmds) and cmds[k + 1].text.strip() == "echo $?"
            assert rc == 0 or shown, f"{where}\nexit status {rc}; output:\n" + "\n".join(out)
            if expect is not None:
                assert matches(expect, out), (f"{where}\nthe doc shows:\n" + "\n".join(expect)
                                              + "\n\nit printed:\n" + "\n".join(out))


# ---------------------------------------------------------------- the tests ----------------

ALL = {doc: parse(doc) for doc in DOCS}


@pytest.fixture
def session(tmp_path):
    s = Session(tmp_path)
    yield s
    s.close()


@pytest.mark.parametrize("doc", DOCS)
def test_doc_commands_run_and_print_what_the_doc_shows(doc, session):
    blocks = [b for b in ALL[doc] if not b.skip and not b.slow]
    assert blocks, f"{doc}: no command blocks"
    run_blocks(session, blocks)


SLOW = [b for doc in DOCS for b in ALL[doc] if b.slow and not b.skip]


@pytest.mark.slow
@pytest.mark.parametrize("block", SLOW, ids=lambda b: b.where)
def test_slow_doc_blocks(block, session):
    run_blocks(session, [block])


SKIPPED = [b for doc in DOCS for b in ALL[doc] if b.skip]


@pytest.mark.parametrize("block", SKIPPED, ids=lambda b: b.where)
def test_skipped_doc_blocks_say_why(block):
    assert len(block.skip) > 10, f"{block.where}: say why the block is not run"
    pytest.skip(f"{block.where} not run: {block.skip}")


def test_every_command_block_is_sh_or_console():
    """A shell block in another fence (plain, bash) would silently not be run."""
    for doc in DOCS:
        text = (ROOT / doc).read_text().splitlines()
        for n, line in enumerate(text, 1):
            m = FENCE.match(line)
            if m and m.group(1) in ("bash", "shell", "shell-session"):
                pytest.fail(f"{doc}:{n}: use ```sh (commands) or ```console (a transcript)")


@pytest.mark.parametrize("expected, actual, ok", [
    (["a  b"], ["a b"], True),
    (["x ~1.5 us"], ["x 22.25 us"], True),
    (["x ~1.5 us"], ["x fast us"], False),
    (["{...}"], ["{anything}"], True),
    (["first", "...", "last"], ["first", "last"], True),
    (["first", "...", "last"], ["first", "1", "2", "last"], True),
    (["first", "last"], ["first", "extra", "last"], False),
    (["only"], ["only", "more"], False),
])
def test_output_patterns(expected, actual, ok):
    assert matches(expected, actual) is ok
