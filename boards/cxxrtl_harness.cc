// The virtual board's CXXRTL model in the harness of board_harness.h.
//
// The design's module is `p_top` with inputs p_clk, p_link__clk, p_line__clk, p_uart__rx,
// p_warp, p_line__skip and outputs p_uart__tx, p_busy, p_link__quiet, p_line__quiet,
// p_line__calm, p_warped, p_video__pixel, p_video__de, p_video__rgb,
// p_video__frame__start, p_run__start (Amaranth port names escaped by write_cxxrtl).

#include "design.h"
#include "board_harness.h"

struct CxxrtlModel {
	cxxrtl_design::p_top top;
	void init() {
		top.p_uart__rx.set<bool>(true);
		top.p_clk.set<bool>(false);
		top.p_link__clk.set<bool>(false);
		top.p_line__clk.set<bool>(false);
		top.step();
	}
	void set_rx(bool v) { top.p_uart__rx.set<bool>(v); }
	void edge(bool core, bool link_clock) {
		// One settled evaluation per rising edge. The falling edge only has to be
		// recorded (commit), not evaluated: nothing in the design uses it, and the
		// outputs read afterwards were settled by the rising edge's step().
		top.p_clk.set<bool>(core);
		top.p_link__clk.set<bool>(link_clock);
		top.p_line__clk.set<bool>(true);
		top.step();
		top.p_clk.set<bool>(false);
		top.p_link__clk.set<bool>(false);
		top.p_line__clk.set<bool>(false);
		top.commit();
	}
	void tick(bool link_clock) { edge(true, link_clock); }
	void tick_line(bool link_clock) { edge(false, link_clock); }
	bool link_quiet() { return top.p_link__quiet.get<bool>(); }
	bool line_quiet() { return top.p_line__quiet.get<bool>(); }
	uint32_t line_calm() { return top.p_line__calm.get<uint32_t>(); }
	void set_line_skip(uint32_t k) { top.p_line__skip.set<uint32_t>(k); }
	bool tx() { return top.p_uart__tx.get<bool>(); }
	bool busy() { return top.p_busy.get<bool>(); }
	void set_warp(bool v) { top.p_warp.set<bool>(v); }
	uint32_t warped() { return top.p_warped.get<uint32_t>(); }
	bool video_pixel() { return top.p_video__pixel.get<bool>(); }
	bool video_de() { return top.p_video__de.get<bool>(); }
	uint16_t video_rgb() { return top.p_video__rgb.get<uint16_t>(); }
	bool video_frame_start() { return top.p_video__frame__start.get<bool>(); }
	bool run_start() { return top.p_run__start.get<bool>(); }
};

int main(int argc, char **argv) {
	static CxxrtlModel model;
	return run_board(model, argc, argv);
}
