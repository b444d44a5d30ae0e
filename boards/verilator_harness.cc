// The virtual board's Verilator model in the harness of board_harness.h.
//
// The model class is `Vtop` (verilator --prefix Vtop) with ports clk, link_clk, line_clk,
// uart_rx, warp, line_skip, uart_tx, busy, link_quiet, line_quiet, line_calm, warped,
// and the display's video_pixel, video_de, video_rgb, video_frame_start and run_start.

#include "Vtop.h"
#include "Vtop___024root.h"
#include "verilated.h"
#include "board_harness.h"

// The model's own evaluation, without the per-call bookkeeping around it in
// Vtop::eval() (a deferred-delete list and a message queue flush, each behind a mutex,
// for $display and dynamic objects the design does not have): 20 % of a clock's time.
void Vtop___024root___eval(Vtop___024root *vlSelf);

struct VerilatorModel {
	VerilatedContext context;
	Vtop top{&context};
	void init() {
		top.uart_rx = 1;
		top.clk = 0;
		top.link_clk = 0;
		top.line_clk = 0;
		top.eval();           // the first evaluation also initialises the model
	}
	void set_rx(bool v) { top.uart_rx = v; }
	void edge(bool core, bool link_clock) {
		// Verilator finds edges by comparing with the last evaluated clock value, so the
		// falling edge needs its (cheap: nothing is triggered) evaluation too.
		top.clk = core;
		top.link_clk = link_clock;
		top.line_clk = 1;
		Vtop___024root___eval(top.rootp);
		top.clk = 0;
		top.link_clk = 0;
		top.line_clk = 0;
		Vtop___024root___eval(top.rootp);
	}
	void tick(bool link_clock) { edge(true, link_clock); }
	void tick_line(bool link_clock) { edge(false, link_clock); }
	bool link_quiet() { return top.link_quiet; }
	bool line_quiet() { return top.line_quiet; }
	uint32_t line_calm() { return top.line_calm; }
	void set_line_skip(uint32_t k) { top.line_skip = k; }
	bool tx() { return top.uart_tx; }
	bool busy() { return top.busy; }
	void set_warp(bool v) { top.warp = v; }
	uint32_t warped() { return top.warped; }
	bool video_pixel() { return top.video_pixel; }
	bool video_de() { return top.video_de; }
	uint16_t video_rgb() { return top.video_rgb; }
	bool video_frame_start() { return top.video_frame_start; }
	bool run_start() { return top.run_start; }
};

int main(int argc, char **argv) {
	static VerilatorModel model;
	return run_board(model, argc, argv);
}
