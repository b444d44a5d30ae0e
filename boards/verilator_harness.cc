// The virtual board's Verilator model in the harness of board_harness.h.
//
// The model class is `Vtop` (verilator --prefix Vtop) with ports clk, uart_rx, warp,
// uart_tx, busy and warped.

#include "Vtop.h"
#include "verilated.h"
#include "board_harness.h"

struct VerilatorModel {
	VerilatedContext context;
	Vtop top{&context};
	void init() {
		top.uart_rx = 1;
		top.clk = 0;
		top.eval();
	}
	void set_rx(bool v) { top.uart_rx = v; }
	void tick() {
		// Verilator finds edges by comparing with the last evaluated clock value, so the
		// falling edge needs its (cheap: nothing is triggered) evaluation too.
		top.clk = 1;
		top.eval();
		top.clk = 0;
		top.eval();
	}
	bool tx() { return top.uart_tx; }
	bool busy() { return top.busy; }
	void set_warp(bool v) { top.warp = v; }
	bool warped() { return top.warped; }
};

int main(int argc, char **argv) {
	static VerilatorModel model;
	return run_board(model, argc, argv);
}
