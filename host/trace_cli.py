"""CLI for the trace tools: ``copper trace compare``, ``copper trace export``, ``copper render``.

Thin layer: parsing and exit codes here, the work in :mod:`copperline.host.trace_compare`,
:mod:`copperline.host.trace_plot`, :mod:`copperline.host.trace_export` and
:mod:`copperline.host.render`.

Exit codes: 0 success; 1 ``trace compare`` failed its ``--tolerance-us``; 2 bad input
(unreadable or invalid trace, bad option value) with the error on stderr. ``--json``:
one object with ``ok`` (docs/cli.md).
"""

from __future__ import annotations

import logging

from copperline.cli_output import CliError, done, emit_json, error_object, wrote, written

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_TOLERANCE = 1
EXIT_BAD_INPUT = 2


def register(subparsers) -> None:
    """Add ``trace`` (with ``compare`` and ``export``) and ``render`` to the ``copper`` CLI."""
    trace = subparsers.add_parser(
        "trace", help="compare timing traces, export them to Perfetto or VCD",
        description="Tools for copperline timing traces (JSON Lines, see docs/traces.md).")
    tsub = trace.add_subparsers(dest="trace_command", metavar="TRACE_COMMAND", required=True)

    p = tsub.add_parser(
        "compare", help="align two traces and report timing deviations",
        description="Align the program events of two traces by (prog, kind, key, occurrence) "
                    "and report deviations d = t_A - t_B in microseconds (A late is "
                    "positive): p50/p99/max of |d|, mean signed d and drift (ppm). "
                    "Exit 1 when --tolerance-us is given and "
                    "an event deviates by more, or events are missing/extra, or register "
                    "values differ.")
    p.add_argument("a", metavar="A", help="the trace under test (e.g. the hardware run)")
    p.add_argument("b", metavar="B", help="the reference A is compared with (e.g. the soft run)")
    p.add_argument("--plot", metavar="OUT.png", help="write a PNG: deviation over time + histogram")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of the table")
    p.add_argument("--tolerance-us", type=float, metavar="X",
                   help="fail (exit 1) when |deviation| > X us, or on missing/extra events "
                        "or register value mismatches")
    p.add_argument("--time", choices=("auto", "model", "wall"), default="auto",
                   help="which time each side is compared by: auto = wall_us when the trace "
                        "has it, else time_us (default); model = always time_us; "
                        "wall = wall_us (error if absent)")
    p.add_argument("--ignore", action="append", default=[], metavar="KIND",
                   choices=("irq", "reg", "state", "bind"),
                   help="leave out an event kind (repeatable), e.g. --ignore state")
    p.set_defaults(func=cmd_compare)

    p = tsub.add_parser(
        "export", help="convert a trace to Perfetto (Chrome trace JSON) or VCD",
        description="Perfetto: Chrome trace-event JSON for ui.perfetto.dev (irq instants, "
                    "register counter tracks, state slices, one process per program). "
                    "VCD: registers as integer signals, irq as events, state as a string, "
                    "for GTKWave.")
    p.add_argument("file", metavar="FILE", help="trace to convert")
    p.add_argument("--format", required=True, choices=("perfetto", "vcd"))
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file")
    p.add_argument("--time", choices=("auto", "model", "wall"), default="model",
                   help="timestamps: model = time_us (default), wall = wall_us (error if "
                        "absent), auto = wall_us when the trace has it")
    p.add_argument("--gtkw", metavar="SAVEFILE",
                   help="vcd only: also write a GTKWave save file showing every signal "
                        "(signed registers as signed decimal)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser(
        "render", help="draw each frame's layers from a trace or a program (GIF or PNGs); "
                       "--exact: the display's frames as PNGs",
        description="Draw the layers (x, y, z, alpha, visible) as they are at each vsync "
                    "edge: from a trace by replaying its reg events, or from a program "
                    "(.json/.cop) by running the soft VM in virtual time. With --exact, "
                    "write the board's display model's frames instead (640x480 RGB PNGs, "
                    "pixel for pixel what the board shows: firmware/display.py).")
    p.add_argument("source", metavar="PROG|TRACE",
                   help="a trace (.jsonl) or a program (.json or .cop)")
    p.add_argument("--frames", type=int, required=True, metavar="N", help="frames to draw")
    p.add_argument("-o", "--output", required=True, metavar="OUT.gif|DIR",
                   help="an animated GIF, or a directory that receives frame_0001.png ... "
                        "(--exact: a directory that receives frame-00000.png ...)")
    p.add_argument("--exact", action="store_true",
                   help="the display model's frames 0..N-1 (frame 0 starts at the program's "
                        "start), exactly as the board's display shows them: no overlay")
    p.add_argument("--board", metavar="NAME", default=None,
                   help="--exact only: whose display (mode, core clock); default icebreaker")
    p.add_argument("--surfaces", metavar="DIR", default=None,
                   help="--exact only: the directory relative surface paths start from "
                        "(default: the program's directory; for a trace, the working one)")
    p.add_argument("--size", default=None, metavar="WxH", help="canvas in pixels (640x480)")
    p.add_argument("--layer-size", default=None, metavar="WxH",
                   help="size drawn for each layer (48x48): registers carry no size")
    p.add_argument("--reset-values", action="store_true",
                   help="draw alpha/visible a layer never had written as their reset value 0 "
                        "(hidden); by default they are drawn as 255 and 1")
    p.add_argument("--clock-hz", type=int, default=None, metavar="HZ",
                   help="PROG only: core clock of the soft VM (default 12000000)")
    p.add_argument("--vsync-hz", type=float, default=None, metavar="HZ",
                   help="PROG only: vsync rate (default 60)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=cmd_render)


def _error(msg: str, code: str = "BAD_INPUT") -> CliError:
    return CliError(msg, code, EXIT_BAD_INPUT)


def cmd_compare(args) -> int:
    from copperline.firmware.trace import TraceError, load_trace
    from copperline.host import trace_compare as tc
    from copperline.host.trace_plot import plot
    try:
        a, b = load_trace(args.a), load_trace(args.b)
        c = tc.compare(a, b, tolerance_us=args.tolerance_us, time=args.time, ignore=args.ignore)
    except (TraceError, ValueError) as exc:
        raise _error(str(exc)) from None
    files = []
    if args.plot:
        try:
            plot(c, args.plot)
        except OSError as exc:
            raise _error(f"{args.plot}: cannot write plot: {exc.strerror or exc}",
                         "CANNOT_WRITE") from None
        files.append(written(args.plot, "plot"))
    report = c.to_json()
    report.pop("ok")
    if not c.ok:
        if args.json:
            emit_json(error_object("TOLERANCE", "; ".join(c.failures), **report, files=files))
        else:
            print(tc.format_table(c), end="")
            for f in files:
                print(wrote(f["path"], "plot"))
        return EXIT_TOLERANCE

    def human() -> None:
        print(tc.format_table(c), end="")
        for f in files:
            print(wrote(f["path"], "plot"))
    return done(args, {**report, "files": files}, human)


def cmd_export(args) -> int:
    from copperline.firmware.trace import TraceError, load_trace
    from copperline.host import trace_export as te
    try:
        t = load_trace(args.file)
        if args.gtkw and args.format != "vcd":
            raise ValueError("--gtkw goes with --format vcd")
        n = te.export(t, args.format, args.output, time=args.time, gtkw=args.gtkw)
    except (TraceError, ValueError) as exc:
        raise _error(str(exc)) from None
    except OSError as exc:
        raise _error(f"{args.output}: cannot write: {exc.strerror or exc}", "CANNOT_WRITE") from None
    files = [written(args.output, args.format)]
    if args.gtkw:
        files.append(written(args.gtkw, "GTKWave save file"))
    return done(args, {"format": args.format, "events": n, "files": files},
                [wrote(args.output, f"{args.format}, {n} events")]
                + ([wrote(args.gtkw, "GTKWave save file")] if args.gtkw else []))


def _size(text: str, what: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{what} must look like WxH, e.g. 640x480 (got {text!r})") from None
    if w <= 0 or h <= 0 or w > 8192 or h > 8192:
        raise ValueError(f"{what} {text!r} out of range (1..8192 per side)")
    return w, h


def cmd_render(args) -> int:
    import os

    from copperline.firmware.trace import TraceError
    from copperline.host import render
    if args.exact:
        return cmd_render_exact(args)
    try:
        if args.board is not None:
            raise ValueError("--board goes with --exact (the drawing takes --clock-hz and "
                             "--vsync-hz)")
        if args.surfaces is not None:
            raise ValueError("--surfaces goes with --exact (the drawing shows no surfaces)")
        size = _size(args.size or "640x480", "--size")
        layer_size = _size(args.layer_size or "48x48", "--layer-size")
        if args.frames < 1:
            raise ValueError(f"--frames must be >= 1 (got {args.frames})")
        frames = render.frames_from_source(args.source, args.frames, clock_hz=args.clock_hz,
                                           vsync_hz=args.vsync_hz)
        out = render.write_frames(frames, args.output, size=size, layer_size=layer_size,
                                  reset_values=args.reset_values)
    except (TraceError, ValueError, render.RenderError) as exc:
        raise _error(str(exc)) from None
    except OSError as exc:
        raise _error(f"{args.output}: cannot write: {exc.strerror or exc}", "CANNOT_WRITE") from None
    what = f"{len(frames)} frames, {size[0]}x{size[1]}"
    if os.path.isdir(out):
        paths = [os.path.join(out, f"frame_{f.index:04d}.png") for f in frames]
        files = [written(p, "frame") for p in paths]
        human = f"wrote {len(paths)} PNGs to {out}/ ({what})"
    else:
        files = [written(out, "GIF" if out.lower().endswith(".gif") else "PNG")]
        human = wrote(out, what)
    return done(args, {"frames": len(frames), "size": list(size), "output": str(out),
                       "files": files}, human)


def cmd_render_exact(args) -> int:
    """``copper render --exact``: the display model's frames 0..N-1 as PNGs in a directory."""
    from copperline.firmware.trace import TraceError
    from copperline.host import render
    try:
        given = [opt for opt, v in (("--size", args.size), ("--layer-size", args.layer_size),
                                    ("--clock-hz", args.clock_hz), ("--vsync-hz", args.vsync_hz),
                                    ("--reset-values", args.reset_values or None))
                 if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: not with --exact (the board's display "
                             "decides the picture, its core clock and frame rate: --board)")
        r = render.render_exact(args.source, args.frames, args.output, board=args.board,
                                surface_dir=args.surfaces)
    except render.CannotWrite as exc:
        raise _error(str(exc), "CANNOT_WRITE") from None
    except (TraceError, ValueError, render.RenderError) as exc:
        raise _error(str(exc)) from None
    except OSError as exc:
        raise _error(f"{args.source}: cannot read: {exc.strerror or exc}") from None
    d = r.display
    w, h = d.mode.h_active, d.mode.v_active
    files = [written(p, "frame") for p in r.paths]
    obj = {"exact": True, "frames": r.frames, "board": r.board, "mode": d.mode.name,
           "size": [w, h], "canvas": [d.canvas_w, d.canvas_h],
           "pixel_hz": int(d.pixel_hz) if float(d.pixel_hz).is_integer() else d.pixel_hz,
           "clock_hz": d.clock_hz, "frame_cycles": d.frame_cycles, "vsync_hz": d.vsync_hz,
           "source": str(args.source), "source_kind": r.source.kind,
           "writes": len(r.source.writes), "output": str(args.output),
           "elapsed_s": round(r.elapsed_s, 3), "files": files}
    human = (f"wrote {r.frames} PNGs to {args.output}/ (frames 0..{r.frames - 1}, {w}x{h}, "
             f"exact: {r.board}'s {d.mode.name} display, {d.clock_hz / 1e6:g} MHz core)")
    return done(args, obj, human)
