// The virtual board's native harness, shared by the simulators (see
// boards/native_board.py): a compiled board top with its UART pins bridged to
// stdin/stdout at the bit level. `cxxrtl_harness.cc` and `verilator_harness.cc` wrap
// their simulator's model in the small interface `run_board` uses:
//
//   void init();          uart_rx high, clock low, everything settled
//   void set_rx(bool);    the uart_rx pin, sampled at the next rising edge
//   void tick(bool link); one clock cycle (rising edge; outputs settled afterwards), with
//                         or without the edge of the top's gated `link` domain
//   void tick_line(bool link); the same for the `line` domain (the UARTs) and, if `link`,
//                         the `link` domain alone: the core's clock stays still
//   bool tx(), busy();    the uart_tx and busy pins
//   bool link_quiet();    no register of the `link` domain would change at the next edge
//   bool line_quiet();    nor of the `line` domain, nor later while uart_rx stays high
//   uint32_t line_calm(); edges of `line` alone in which only the transmitter's bit timer
//                         counts (while uart_rx stays high; 0: none)
//   void set_line_skip(uint32_t k); the next tick_line also stands for k more edges
//                         (k < line_calm(); 0 otherwise)
//   void set_warp(bool);  the core's warp request (simulation only, docs/core.md "Warp")
//   uint32_t warped();    core cycles a warp skipped at the end of this clock (0: none)
//   bool video_pixel(), video_de(); uint16_t video_rgb(); bool video_frame_start();
//   bool run_start();     the display output (a new pixel this clock, active video, its
//                         RGB444 colour r << 8 | g << 4 | b, a frame's first pixel) and
//                         a program's start with a time-base reset (all 0 in a top
//                         without display)
//
// The top is the board top in a reset-less clock domain (a virtual board never asserts
// reset; without a reset input the simulators drop the reset logic).
//
// stdin  : bytes the host sends; they are shifted into `uart_rx` as 8N1 frames at the
//          board's exact bit period (back to back, like an FTDI chip at full rate).
// stdout : bytes decoded from `uart_tx` (sampled mid-bit, like the host's UART).
// --replay: stdin is read to its end first and holds records "u32 idle clocks, u32
//          length, bytes" (little-endian): the line stays idle for that many clocks, then
//          the bytes follow back to back. With --no-pace and --no-idle-skip a run is then
//          a pure function of the input (tests compare runs byte for byte).
// --stamp : each byte on stdout is preceded by the fabric cycle (u64, little-endian) in
//          which its stop bit was sampled.
// --video-fd=N --video-size=WxH: the display, on file descriptor N: each program start
//          with a time-base reset as a record "CPVR", u32 starts so far, u32 0; then every
//          whole frame of active video as a record "CPVF", u32 frame number (0: the frame
//          that began with the last such start), u16 W, u16 H, then W*H u16 RGB444 pixels
//          (little-endian, rows top first). Frames before the first start and a frame a
//          start cuts short are not sent. Use with --no-idle-skip and --warp=0: the display never idles.
// stderr : "stats cycles=N wall_ns=N sim_ns=N busy_cycles=N skipped=N ticks=N warped=N
//          link_ticks=N line_ticks=N" about once a second, on SIGUSR1, and at exit
//          (cycles: simulated fabric cycles; ticks: clocks evaluated; warped: warped core
//          cycles; link_ticks: clocks that clocked the link domain too; line_ticks: clocks
//          of the line (and link) alone, catching up with a warp).
//
// Time: with pacing on (the default) simulated time never runs ahead of the wall clock,
// so the board behaves like hardware towards the host (timeouts, line rate). While the
// top is not busy (no frame on the line, nothing running, no events) and the host is
// silent, the clock is stopped instead of spun (--idle-skip, default on): nothing in the
// design observes idle time except the cycle counter, which only matters relative to a
// program's start. While the top is busy and no byte comes in, the harness asks the core
// to warp (--warp=P: the fabric cycles of a core cycle, its phases; 0 = never); the top
// passes the request on only while its link is detached from the core (no frame begun
// or executing, no command waiting; a response may be going out). A core cycle in which
// nothing but counting can happen then also stands for the core cycles `warped()`
// reports, P fabric cycles each, and the line catches up: its domain (and the link's,
// gated as below) is clocked alone, with the core's clock still, while anything on it
// moves -- the rest of a response goes out, a byte begun comes in, at their exact fabric
// cycles; inside a bit, the transmitter's calm edges are one tick (`line_calm`) -- and
// once `line_quiet` the remaining cycles pass at once. No byte starts on uart_rx
// meanwhile. (--warp-max=N: the most fabric cycles one warp skips; with
// --replay, warps are then only asked for while the next burst is further off, so a
// replay gives the same bytes at the same cycles warped or not.)
//
// Gated link clock (--no-gate turns it off): the link and the bus decode run in their own
// clock domain, which gets its edge with every clock except while the top says none of
// their registers would change (`link_quiet`: idle, or a byte waiting for the busy UART,
// which is in the `line` domain). Leaving such an edge out changes nothing but the
// simulator's work: while a program runs, a clock costs little more than the core's
// logic, whether the link idles or streams events.

#pragma once

#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>
#include <fcntl.h>

#include <deque>
#include <vector>

static volatile sig_atomic_t stats_wanted = 0;
static void on_usr1(int) { stats_wanted = 1; }

static uint64_t now_ns() {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

template <class Model>
int run_board(Model &top, int argc, char **argv) {
	uint64_t fabric_hz = 12000000;
	uint32_t div = 12, frac_num = 0, frac_den = 1;   // a bit: div + frac_num/frac_den clocks
	uint64_t warp_n = 0, warp_max = 0;
	bool pace = true, idle_skip = true, gate = true, replay = false, stamp = false;
	int video_fd = -1;
	uint32_t video_w = 0, video_h = 0;
	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "--hz=", 5)) fabric_hz = strtoull(argv[i] + 5, 0, 10);
		else if (!strncmp(argv[i], "--div=", 6)) div = strtoul(argv[i] + 6, 0, 10);
		else if (!strncmp(argv[i], "--frac=", 7)) {
			if (sscanf(argv[i] + 7, "%u/%u", &frac_num, &frac_den) != 2) frac_den = 0;
		}
		else if (!strcmp(argv[i], "--no-pace")) pace = false;
		else if (!strcmp(argv[i], "--no-idle-skip")) idle_skip = false;
		else if (!strcmp(argv[i], "--no-gate")) gate = false;
		else if (!strcmp(argv[i], "--replay")) replay = true;
		else if (!strcmp(argv[i], "--stamp")) stamp = true;
		else if (!strncmp(argv[i], "--warp=", 7)) warp_n = strtoull(argv[i] + 7, 0, 10);
		else if (!strncmp(argv[i], "--warp-max=", 11)) warp_max = strtoull(argv[i] + 11, 0, 10);
		else if (!strncmp(argv[i], "--video-fd=", 11)) video_fd = atoi(argv[i] + 11);
		else if (!strncmp(argv[i], "--video-size=", 13)) {
			if (sscanf(argv[i] + 13, "%ux%u", &video_w, &video_h) != 2) video_w = 0;
		}
		else { fprintf(stderr, "error unknown argument %s\n", argv[i]); return 2; }
	}
	if (div < 4 || fabric_hz == 0 || frac_den == 0 || frac_num >= frac_den) {
		fprintf(stderr, "error bad --div/--frac/--hz\n");
		return 2;
	}
	if (video_fd >= 0 && (video_w == 0 || video_h == 0)) {
		fprintf(stderr, "error --video-fd needs --video-size=WxH\n");
		return 2;
	}
	// the display capture: pixels of the frame being shown since the last program start
	std::vector<uint16_t> video_frame(video_w * video_h);
	uint32_t video_pos = 0, video_number = 0, video_resets = 0;
	bool video_on = false;         // a program start was seen: frames are numbered
	auto video_send = [&](const uint8_t *data, size_t size) {
		for (size_t off = 0; off < size && video_fd >= 0;) {
			ssize_t n = write(video_fd, data + off, size - off);
			if (n < 0) { if (errno == EINTR || errno == EAGAIN) continue; video_fd = -1; return; }
			off += n;
		}
	};
	auto capture = [&]() {
		if (top.run_start()) {
			video_on = true; video_number = 0; video_pos = 0; video_resets++;
			uint8_t rec[12] = {'C', 'P', 'V', 'R'};
			memcpy(rec + 4, &video_resets, 4);
			video_send(rec, sizeof rec);
		}
		if (top.video_frame_start()) video_pos = 0;
		if (!video_on || !top.video_pixel() || !top.video_de()) return;
		if (video_pos < video_frame.size()) video_frame[video_pos] = top.video_rgb();
		if (++video_pos != video_frame.size()) return;
		uint8_t head[12] = {'C', 'P', 'V', 'F'};
		memcpy(head + 4, &video_number, 4);
		uint16_t wh[2] = {(uint16_t)video_w, (uint16_t)video_h};
		memcpy(head + 8, wh, 4);
		video_send(head, sizeof head);
		video_send((const uint8_t *)video_frame.data(), video_frame.size() * 2);
		video_number++;
	};
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;        // SIGUSR1: print the stats line now (benchmarks)
	sigaction(SIGUSR1, &sa, 0);
	fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);

	top.init();        // uart_rx high (line idle), clock low, settled

	std::deque<uint8_t> inq;
	std::vector<uint8_t> out;
	// host -> board serialiser
	uint32_t rx_frame = 0, rx_bits = 0, rx_timer = 0;   // rx_bits left in the frame
	// board -> host deserialiser
	int tx_state = -1;          // -1 idle; 0 start bit; 1..8 data; 9 stop
	uint32_t tx_timer = 0, tx_shreg = 0;
	bool tx_prev = true;
	// a fractional bit period (hdl/uart.py bit_timing): bits of div or div + 1 clocks,
	// averaging div + frac_num / frac_den, from one accumulator per direction
	uint32_t rx_acc = 0, tx_acc = 0;
	auto bit_clocks = [&](uint32_t &acc) -> uint32_t {
		if (!frac_num) return div;
		acc += frac_num;
		if (acc >= frac_den) { acc -= frac_den; return div + 1; }
		return div;
	};

	const uint64_t chunk = fabric_hz / 4000 > 64 ? fabric_hz / 4000 : 64;   // 0.25 ms
	uint64_t cycles = 0, busy_cycles = 0, skipped = 0, sim_ns = 0, ticks = 0, warped = 0;
	uint64_t link_ticks = 0, line_ticks = 0;
	uint64_t t_ref = now_ns(), c_ref = 0, t_stats = t_ref, t_start = t_ref;
	bool eof = false;
	struct Burst { uint64_t idle; std::vector<uint8_t> bytes; };
	// --warp-max: the most fabric cycles one warp skips; with it, a warp is only asked
	// for while the next replayed burst is further off (the request is sampled up to two
	// core cycles before the warp)
	const uint64_t warp_guard = warp_max + 2 * warp_n + 1;
	std::deque<Burst> script;          // --replay: what is still to come
	if (replay) {
		std::vector<uint8_t> all;
		uint8_t b[4096];
		for (ssize_t n; (n = read(0, b, sizeof b)) != 0;) {
			if (n < 0) { if (errno == EINTR || errno == EAGAIN) { poll(0, 0, 1); continue; } break; }
			all.insert(all.end(), b, b + n);
		}
		for (size_t at = 0; at + 8 <= all.size();) {
			uint32_t idle, len;
			memcpy(&idle, &all[at], 4);
			memcpy(&len, &all[at + 4], 4);
			at += 8;
			if (len > all.size() - at) { fprintf(stderr, "error truncated --replay record\n"); return 2; }
			script.push_back({idle, std::vector<uint8_t>(all.begin() + at, all.begin() + at + len)});
			at += len;
		}
		eof = true;
	}
	auto print_stats = [&](uint64_t wall_ns) {
		fprintf(stderr, "stats cycles=%llu wall_ns=%llu sim_ns=%llu busy_cycles=%llu skipped=%llu "
		        "ticks=%llu warped=%llu link_ticks=%llu line_ticks=%llu\n", (unsigned long long)cycles,
		        (unsigned long long)wall_ns, (unsigned long long)sim_ns,
		        (unsigned long long)busy_cycles, (unsigned long long)skipped,
		        (unsigned long long)ticks, (unsigned long long)warped,
		        (unsigned long long)link_ticks, (unsigned long long)line_ticks);
	};
	uint8_t buf[65536];

	for (;;) {
		if (stats_wanted) {
			stats_wanted = 0;
			print_stats(now_ns() - t_start);
		}
		// --- input from the host
		bool idle = !eof && inq.empty() && rx_bits == 0 && tx_state < 0 && !top.busy();
		int timeout = 0;
		if (idle && idle_skip) timeout = 200;
		struct pollfd pfd = {0, POLLIN, 0};
		int pr = eof ? 0 : poll(&pfd, 1, timeout);
		if (pr > 0) {
			ssize_t n = read(0, buf, sizeof buf);
			if (n > 0) inq.insert(inq.end(), buf, buf + n);
			else if (n == 0) eof = true;
		}
		if (eof && inq.empty() && rx_bits == 0 && script.empty())
			break;                  // host gone: the last byte is on the line
		if (idle && idle_skip) {
			if (inq.empty()) { skipped++; t_ref = now_ns(); c_ref = cycles; continue; }
			t_ref = now_ns(); c_ref = cycles;     // wake up: time resumes now
		}

		// --- simulate one chunk
		uint64_t t_chunk = now_ns();
		uint64_t done = 0;          // fabric cycles simulated in this chunk, warps included
		// host -> board, once per clock: the line idles, or the next bit of a byte;
		// new_bytes: a byte may start (not while the line catches up with a warp)
		auto drive_rx = [&](bool new_bytes) {
			if (rx_bits == 0 && inq.empty() && !script.empty()) {
				if (script.front().idle) script.front().idle--;    // the line idles this clock
				else if (new_bytes) {
					inq.insert(inq.end(), script.front().bytes.begin(), script.front().bytes.end());
					script.pop_front();
				}
			}
			if (new_bytes && rx_bits == 0 && !inq.empty()) {
				rx_frame = (uint32_t)inq.front() << 1 | 0x200;   // start 0, data LSB first, stop 1
				inq.pop_front();
				rx_bits = 10;
				rx_timer = bit_clocks(rx_acc);
			}
			if (rx_bits) {
				top.set_rx(rx_frame & 1);
				if (--rx_timer == 0) { rx_frame >>= 1; rx_bits--; rx_timer = bit_clocks(rx_acc); }
			} else {
				top.set_rx(true);
			}
		};
		// board -> host, after each clock: decode uart_tx, sampled mid-bit
		auto decode_tx = [&]() {
			bool tx = top.tx();
			if (tx_state < 0) {
				if (tx_prev && !tx) { tx_state = 0; tx_timer = div / 2; }
			} else if (--tx_timer == 0) {
				tx_timer = bit_clocks(tx_acc);
				if (tx_state == 0) {
					if (tx) tx_state = -1;               // glitch, not a start bit
					else { tx_state = 1; tx_shreg = 0; }
				} else if (tx_state <= 8) {
					tx_shreg |= (uint32_t)tx << (tx_state - 1);
					tx_state++;
				} else {
					if (tx) {                            // a framing error drops the byte
						if (stamp) {
							uint64_t at = cycles + done;
							out.insert(out.end(), (uint8_t *)&at, (uint8_t *)&at + 8);
						}
						out.push_back((uint8_t)tx_shreg);
					}
					tx_state = -1;
				}
			}
			tx_prev = tx;
		};
		while (done < chunk) {
			drive_rx(true);
			// warp only while a program may run (busy; without one the idle skip stops the
			// clock instead, and board time stays the line's own) and no byte comes in
			// (the top also waits for its link to be detached from the core); replayed
			// input is not overtaken: its next burst is further off than any warp
			top.set_warp(warp_n && top.busy() && rx_bits == 0 && inq.empty() &&
			             (!warp_max || script.empty() || script.front().idle > warp_guard));
			bool link_clock = !(gate && top.link_quiet());
			top.tick(link_clock);        // one clock: rising edge, outputs settled
			ticks++;
			if (video_fd >= 0) capture();
			link_ticks += link_clock;
			done++;
			if (top.busy()) busy_cycles++;
			decode_tx();
			uint32_t skip = warp_n ? top.warped() : 0;
			if (!skip) {
				// the board fell idle (its answer is out, nothing comes in): end the
				// chunk here, so that the clock stops now (idle skip) and the answer
				// goes to the host at once: board time is the line's, not rounded up
				// to a chunk
				if (idle_skip && !eof && inq.empty() && rx_bits == 0 && tx_state < 0 &&
				    !top.busy())
					break;
				continue;
			}
			warped++;
			// The core is `owed` fabric cycles ahead. The line and the link (detached
			// from the core) catch up alone: clock by clock while anything on them moves
			// (a response going out, a byte coming in), the rest at once.
			uint64_t owed = (uint64_t)skip * warp_n;
			while (owed && !(rx_bits == 0 && top.line_quiet())) {
				// edges in which only the bit timer counts: one tick stands for them all
				// (uart_tx holds still, so the decoder runs over them without the model)
				uint32_t calm = rx_bits == 0 ? top.line_calm() : 0;
				uint64_t k = calm > 1 ? calm - 1 : 0;
				if (k > owed - 1) k = owed - 1;
				top.set_line_skip((uint32_t)k);
				bool lc = !(gate && top.link_quiet());
				for (uint64_t i = 0; i <= k; i++) drive_rx(false);
				top.tick_line(lc);
				top.set_line_skip(0);
				line_ticks++;
				link_ticks += lc;
				for (uint64_t i = 0; i <= k; i++) {
					done++;
					owed--;
					decode_tx();
				}
			}
			done += owed;
			if (rx_bits == 0 && inq.empty() && !script.empty()) {
				uint64_t &idle = script.front().idle;
				idle -= idle < owed ? idle : owed;
			}
		}
		cycles += done;
		sim_ns += now_ns() - t_chunk;

		// --- output to the host
		size_t off = 0;
		while (off < out.size()) {
			ssize_t n = write(1, out.data() + off, out.size() - off);
			if (n < 0) { if (errno == EINTR || errno == EAGAIN) continue; return 0; }
			off += n;
		}
		out.clear();

		// --- pacing: never run ahead of the wall clock
		uint64_t t = now_ns();
		if (pace) {
			uint64_t target = t_ref + (cycles - c_ref) * 1000000000ull / fabric_hz;
			if (target > t) {
				uint64_t d = target - t;
				struct timespec ts = {(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
				nanosleep(&ts, 0);
			} else if (t - target > 100000000ull) {
				t_ref = t; c_ref = cycles;   // behind by > 100 ms: do not try to catch up
			}
		}
		if (t - t_stats > 1000000000ull) {
			t_stats = t;
			print_stats(t - t_start);
		}
	}
	print_stats(now_ns() - t_start);
	return 0;
}
