// The Copper core's Verilator simulation driver: the core (wrapped by sim/cxxrtl.py's
// SimTop, in a reset-less clock domain) verilated with sim/verilator_build.py, driven
// over stdin/stdout with the line protocol of sim/cxxrtl_core.cc (see there), so that
// copperline/sim/verilator.py (VerilatorMachine) shares CxxrtlMachine's client code.
//
// Differences from the CXXRTL driver:
//   mw/mr NAME ...   NAME is one of prog, fence, rf (the three memories the engine
//                    writes; the build marks them public_flat_rw and passes their
//                    Verilator names as MEM_PROG, MEM_FENCE, MEM_RF)
//   names            -> "n prog|fence|rf 2 WIDTH DEPTH"
//   run ...          the same arguments; replies one line "r REC REC ..." (every tap
//                    record, possibly none), one line "e CYCLE ..." (vsync edges), then
//                    "t RECORD" or "t -" (fewer lines: the pipe and Python's reading of
//                    it cost more than the simulation when every cycle has events)
//   --waves=FILE     waveforms, FST or VCD as the build chose (--trace-fst / --trace;
//                    VM_TRACE_FST / VM_TRACE_VCD), one time unit per clock edge
// No reset input: registers and memories start from their initial values (the engine's
// first hidden core cycle resets every context), so the two reset clocks of the CXXRTL
// driver are not needed and Verilator drops the reset logic.

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <string>
#include <vector>

#include "Vtop.h"
#include "Vtop___024root.h"
#include "verilated.h"
#if VM_TRACE_FST
#include "verilated_fst_c.h"
typedef VerilatedFstC TraceFile;
#elif VM_TRACE
#include "verilated_vcd_c.h"
typedef VerilatedVcdC TraceFile;
#endif

#ifndef MEM_PROG
#error "MEM_PROG, MEM_FENCE and MEM_RF must name the memories (see sim/verilator.py)"
#endif

// The model's evaluation without Vtop::eval()'s per-call bookkeeping (see
// boards/verilator_harness.cc); with waveforms on, the full eval() (it samples nothing
// itself, but keeps the trace's change detection consistent).
void Vtop___024root___eval(Vtop___024root *vlSelf);

static VerilatedContext *context;
static Vtop *top;
static int phases = 4;
#if VM_TRACE
static TraceFile *tfp = nullptr;
#endif
static uint64_t wave_time = 0;

static inline void eval() {
#if VM_TRACE
	if (tfp) {
		top->eval();
		tfp->dump(wave_time++);
		return;
	}
#endif
	Vtop___024root___eval(top->rootp);
}

struct Mem {
	const char *name;
	unsigned width;
	size_t depth;
	uint64_t (*get)(size_t);
	void (*set)(size_t, uint64_t);
};

#define MEM_ACCESS(FIELD) \
	[](size_t i) -> uint64_t { return (uint64_t)top->rootp->FIELD[i]; }, \
	[](size_t i, uint64_t v) { top->rootp->FIELD[i] = v; }
#define MEM_DEPTH(FIELD) (sizeof(top->rootp->FIELD) / sizeof(top->rootp->FIELD[0]))
#define MEM_WIDTH(FIELD) (8 * sizeof(top->rootp->FIELD[0]))

static std::vector<Mem> mems;

static Mem *find(const char *name) {
	for (auto &m : mems)
		if (!strcmp(m.name, name)) return &m;
	return nullptr;
}

int main(int argc, char **argv) {
	const char *wave_path = nullptr;
	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "--phases=", 9)) phases = atoi(argv[i] + 9);
		else if (!strncmp(argv[i], "--waves=", 8)) wave_path = argv[i] + 8;
		else { fprintf(stderr, "unknown argument %s\n", argv[i]); return 2; }
	}
	if (phases < 1 || phases > 64) { fprintf(stderr, "bad --phases\n"); return 2; }
	context = new VerilatedContext;
#if VM_TRACE
	if (wave_path) context->traceEverOn(true);
#endif
	top = new Vtop{context};
	mems = {
		{"prog", MEM_WIDTH(MEM_PROG), MEM_DEPTH(MEM_PROG), MEM_ACCESS(MEM_PROG)},
		{"fence", MEM_WIDTH(MEM_FENCE), MEM_DEPTH(MEM_FENCE), MEM_ACCESS(MEM_FENCE)},
		{"rf", MEM_WIDTH(MEM_RF), MEM_DEPTH(MEM_RF), MEM_ACCESS(MEM_RF)},
	};
	if (wave_path) {
#if VM_TRACE
		tfp = new TraceFile;
		top->trace(tfp, 99);
		tfp->open(wave_path);
		if (!tfp->isOpen()) { fprintf(stderr, "cannot write %s\n", wave_path); return 2; }
#else
		fprintf(stderr, "this simulator was built without waveform support\n");
		return 2;
#endif
	}
	top->clk = 0;
	top->eval();              // the first evaluation also initialises the model
#if VM_TRACE
	if (tfp) tfp->dump(wave_time++);
#endif

	static char line[1 << 16];
	std::string out;
	while (fgets(line, sizeof line, stdin)) {
		std::vector<char *> tok;
		for (char *s = strtok(line, " \t\r\n"); s; s = strtok(nullptr, " \t\r\n")) tok.push_back(s);
		if (tok.empty()) continue;
		std::string cmd = tok[0];
		out.clear();
		if (cmd == "quit") break;
		if (cmd == "mw" || cmd == "mr") {
			Mem *m = tok.size() >= 3 ? find(tok[1]) : nullptr;
			if (!m) {
				printf("error no memory %s\n", tok.size() > 1 ? tok[1] : "");
				fflush(stdout);
				continue;
			}
			size_t index = strtoull(tok[2], nullptr, 16);
			if (cmd == "mw") {
				bool bad = false;
				for (size_t k = 3; k < tok.size(); k++) {
					size_t row = index + k - 3;
					if (row >= m->depth) { bad = true; break; }
					m->set(row, strtoull(tok[k], nullptr, 16));
				}
				out = bad ? "error row out of range\n" : "ok\n";
			} else {
				size_t count = tok.size() > 3 ? strtoull(tok[3], nullptr, 16) : 1;
				out = "v";
				char buf[32];
				for (size_t k = 0; k < count; k++) {
					size_t row = index + k;
					snprintf(buf, sizeof buf, " %llx",
					         (unsigned long long)(row < m->depth ? m->get(row) : 0));
					out += buf;
				}
				out += "\nok\n";
			}
			top->eval();
		} else if (cmd == "status" && tok.size() == 2) {
			top->sslot = strtoul(tok[1], nullptr, 16);
			top->eval();
			char buf[128];
			snprintf(buf, sizeof buf, "s %x %x %x %x\nok\n", (unsigned)top->sst,
			         (unsigned)top->spc, (unsigned)top->nst, (unsigned)top->npc);
			out = buf;
		} else if (cmd == "run" && (int)tok.size() == 4 + phases) {
			uint64_t n = strtoull(tok[1], nullptr, 10);
			uint64_t cmdv = strtoull(tok[2], nullptr, 16);
			std::vector<int64_t> fw(phases, -1);
			for (int k = 0; k < phases; k++)
				if (strcmp(tok[3 + k], "-")) fw[k] = strtoll(tok[3 + k], nullptr, 16);
			bool vs = atoi(tok[3 + phases]);
			char buf[64];
			std::string edges = "e";
			out = "r";
			for (uint64_t i = 0; i < n; i++) {
				for (int ph = 0; ph < phases; ph++) {
					if (i == 0) {
						top->cmdv = ph == 0 && cmdv != 0;
						top->cmdp = ph == 0 ? cmdv : 0;
						top->fwv = fw[ph] >= 0;
						top->fwp = fw[ph] >= 0 ? (uint64_t)fw[ph] : 0;
					} else if (i == 1 && ph == 0) {
						top->cmdv = 0;
						top->fwv = 0;
					}
					top->clk = 0;
					eval();
					if (ph == 0 && vs && top->vedge) {
						snprintf(buf, sizeof buf, " %x", (unsigned)top->cyc);
						edges += buf;
					}
					if ((i || ph) && top->tapv) {
						snprintf(buf, sizeof buf, " %llx", (unsigned long long)top->tapp);
						out += buf;
					}
					top->clk = 1;
					eval();
				}
			}
			if (n == 1) {
				top->cmdv = 0;
				top->fwv = 0;
			}
			top->clk = 0;
			eval();
			out += "\n";
			out += edges;
			out += "\n";
			if (top->tapv)
				snprintf(buf, sizeof buf, "t %llx\nok\n", (unsigned long long)top->tapp);
			else
				snprintf(buf, sizeof buf, "t -\nok\n");
			out += buf;
		} else if (cmd == "names") {
			char buf[128];
			for (auto &m : mems) {
				snprintf(buf, sizeof buf, "n %s 2 %u %zu\n", m.name, m.width, m.depth);
				out += buf;
			}
			out += "ok\n";
		} else {
			out = "error bad command " + cmd + "\n";
		}
		fwrite(out.data(), 1, out.size(), stdout);
		fflush(stdout);
	}
#if VM_TRACE
	if (tfp) {
		tfp->close();
		delete tfp;
	}
#endif
	top->final();
	delete top;
	delete context;
	return 0;
}
