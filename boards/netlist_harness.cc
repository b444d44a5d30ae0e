// The bitstream/netlist board's Verilator model in the harness of board_harness.h.
//
// The model class is `Vtop` (verilator --prefix Vtop): a wrapper around the gate-level
// netlist of the flashed design (copperline.boards.bitstream_sim) with the ports clk (the
// fabric clock: the board's clock pin, or a PLL's output, see bitstream_sim.py),
// uart_rx and uart_tx. The netlist has none of the simulation-only pins of the RTL top,
// so this model has no idle state the harness could see (busy() is always true: the
// clock never stops, run with --no-idle-skip or not, and nothing is warped), no gated
// link clock (link_quiet() is false) and no line-only catch-up (line_quiet() true,
// line_calm() 0, warped() 0: tick_line is never called).

#include "Vtop.h"
#include "verilated.h"
#include "board_harness.h"

struct NetlistModel {
	VerilatedContext context;
	Vtop top{&context};
	void init() {
		top.uart_rx = 1;
		top.clk = 0;
		top.eval();           // the first evaluation also runs the initial values
	}
	void set_rx(bool v) { top.uart_rx = v; }
	void tick(bool) {
		top.clk = 1;
		top.eval();
		top.clk = 0;
		top.eval();
	}
	void tick_line(bool) {}
	bool link_quiet() { return false; }
	bool line_quiet() { return true; }
	uint32_t line_calm() { return 0; }
	void set_line_skip(uint32_t) {}
	bool tx() { return top.uart_tx; }
	bool busy() { return true; }
	void set_warp(bool) {}
	uint32_t warped() { return 0; }
	// (the display is not captured from a netlist: copper board sim --video runs the RTL)
	bool video_pixel() { return false; }
	bool video_de() { return false; }
	uint16_t video_rgb() { return 0; }
	bool video_frame_start() { return false; }
	bool run_start() { return false; }
};

int main(int argc, char **argv) {
	static NetlistModel model;
	return run_board(model, argc, argv);
}
