// The Copper core's native simulation driver: the core (wrapped by sim/cxxrtl.py's
// SimTop) compiled with CXXRTL, driven over stdin/stdout with one text command per line.
// See copperline/sim/cxxrtl.py (CxxrtlMachine) for the client.
//
// Commands (numbers in hex unless said otherwise; every reply ends with "ok" or
// "error <message>"):
//   mw NAME INDEX V1 V2 ...    write memory NAME (a debug item, '/' for spaces) from row INDEX
//   mr NAME INDEX COUNT        read COUNT rows -> "v V1 V2 ..."
//   status SLOT                -> "s STATE PC NEXTSTATE NEXTPC" (status port; E's result)
//   run N CMD FW0 .. FW{P-1} VS
//       clock N (decimal) core cycles; CMD (0 = none) is offered in phase 0 of the first
//       one, FWk ("-" = none) is a fence_wr payload offered in phase k of the first one;
//       VS = 1 records vsync edges. Replies "r RECORD" per tap record, "e CYCLE" per vsync
//       edge, then "t RECORD" (or "t -") for E's record in phase 0 after the last cycle.
//       The record of phase 0 of the first cycle was reported by the previous run's "t".
//   names                      -> "n NAME TYPE WIDTH DEPTH" per debug item
//   quit
// Options: --phases=P, --vcd=FILE (a sample every clock edge, 1 us per clock).

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fstream>
#include <string>
#include <vector>

#include "design.h"
#include <cxxrtl/cxxrtl_vcd.h>

using namespace cxxrtl_design;

static p_top top;
static cxxrtl::debug_items items;
static cxxrtl::vcd_writer *vcd = nullptr;
static std::ofstream vcd_file;
static uint64_t vcd_time = 0;
static int phases = 4;

template<size_t N>
static uint64_t get64(const value<N> &v) {
	uint64_t r = v.data[0];
	if (value<N>::chunks > 1) r |= (uint64_t)v.data[1] << 32;
	return r;
}
template<size_t N>
static uint64_t get64(const wire<N> &w) { return get64(w.curr); }
// ports are values or wires depending on how the design uses them
template<size_t N>
static void set64(value<N> &v, uint64_t x) {
	v.data[0] = (uint32_t)x;
	if (value<N>::chunks > 1) v.data[1] = (uint32_t)(x >> 32);
}
template<size_t N>
static void set64(wire<N> &w, uint64_t x) { set64(w.next, x); }

static void sample() {
	if (!vcd) return;
	vcd->sample(vcd_time++);
	vcd_file << vcd->buffer;
	vcd->buffer.clear();
}

// one full clock: falling edge (inputs settle), rising edge
static void tick() {
	top.p_clk.set<bool>(false);
	top.step();
	sample();
	top.p_clk.set<bool>(true);
	top.step();
	sample();
}

// names come with '/' for the spaces of CXXRTL's hierarchical names
static const cxxrtl::debug_item *find(std::string name) {
	for (auto &c : name) if (c == '/') c = ' ';
	if (!items.count(name)) return nullptr;
	return &items.at(name).at(0);
}

int main(int argc, char **argv) {
	const char *vcd_path = nullptr;
	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "--phases=", 9)) phases = atoi(argv[i] + 9);
		else if (!strncmp(argv[i], "--vcd=", 6)) vcd_path = argv[i] + 6;
		else { fprintf(stderr, "unknown argument %s\n", argv[i]); return 2; }
	}
	if (phases < 1 || phases > 64) { fprintf(stderr, "bad --phases\n"); return 2; }
	top.debug_info(&items, nullptr, "");
	if (vcd_path) {
		vcd_file.open(vcd_path);
		if (!vcd_file) { fprintf(stderr, "cannot write %s\n", vcd_path); return 2; }
		vcd = new cxxrtl::vcd_writer;
		vcd->timescale(1, "us");
		vcd->add_without_memories(items);
	}
	// reset for two clocks, then run free
	top.p_rst.set<bool>(true);
	tick();
	tick();
	top.p_rst.set<bool>(false);
	top.p_clk.set<bool>(false);
	top.step();

	char line[1 << 16];
	std::string out;
	while (fgets(line, sizeof line, stdin)) {
		std::vector<char *> tok;
		for (char *s = strtok(line, " \t\r\n"); s; s = strtok(nullptr, " \t\r\n")) tok.push_back(s);
		if (tok.empty()) continue;
		std::string cmd = tok[0];
		out.clear();
		if (cmd == "quit") break;
		if (cmd == "mw" || cmd == "mr") {
			const cxxrtl::debug_item *it = tok.size() >= 3 ? find(tok[1]) : nullptr;
			if (!it || it->type != cxxrtl::debug_item::MEMORY) {
				printf("error no memory %s\n", tok.size() > 1 ? tok[1] : "");
				fflush(stdout);
				continue;
			}
			size_t chunks = (it->width + 31) / 32;
			size_t index = strtoull(tok[2], nullptr, 16);
			if (cmd == "mw") {
				bool bad = false;
				for (size_t k = 3; k < tok.size(); k++) {
					size_t row = index + k - 3 - it->zero_at;
					if (row >= it->depth) { bad = true; break; }
					uint64_t v = strtoull(tok[k], nullptr, 16);
					for (size_t c = 0; c < chunks; c++)
						it->curr[row * chunks + c] = c < 2 ? (uint32_t)(v >> (32 * c)) : 0;
				}
				out = bad ? "error row out of range\n" : "ok\n";
			} else {
				size_t count = tok.size() > 3 ? strtoull(tok[3], nullptr, 16) : 1;
				out = "v";
				char buf[32];
				for (size_t k = 0; k < count; k++) {
					size_t row = index + k - it->zero_at;
					uint64_t v = 0;
					if (row < it->depth) {
						v = it->curr[row * chunks];
						if (chunks > 1) v |= (uint64_t)it->curr[row * chunks + 1] << 32;
					}
					snprintf(buf, sizeof buf, " %llx", (unsigned long long)v);
					out += buf;
				}
				out += "\nok\n";
			}
			// memories changed behind the design's back: re-evaluate
			top.step();
		} else if (cmd == "status" && tok.size() == 2) {
			top.p_sslot.set<uint32_t>(strtoul(tok[1], nullptr, 16));
			top.step();
			char buf[128];
			snprintf(buf, sizeof buf, "s %x %x %x %x\nok\n", top.p_sst.get<uint32_t>(),
			         top.p_spc.get<uint32_t>(), top.p_nst.get<uint32_t>(), top.p_npc.get<uint32_t>());
			out = buf;
		} else if (cmd == "run" && (int)tok.size() == 4 + phases) {
			uint64_t n = strtoull(tok[1], nullptr, 10);
			uint64_t cmdv = strtoull(tok[2], nullptr, 16);
			std::vector<int64_t> fw(phases, -1);
			for (int k = 0; k < phases; k++)
				if (strcmp(tok[3 + k], "-")) fw[k] = strtoll(tok[3 + k], nullptr, 16);
			bool vs = atoi(tok[3 + phases]);
			char buf[64];
			for (uint64_t i = 0; i < n; i++) {
				for (int ph = 0; ph < phases; ph++) {
					if (i == 0) {
						top.p_cmdv.set<bool>(ph == 0 && cmdv != 0);
						set64(top.p_cmdp, ph == 0 ? cmdv : 0);
						top.p_fwv.set<bool>(fw[ph] >= 0);
						set64(top.p_fwp, fw[ph] >= 0 ? (uint64_t)fw[ph] : 0);
					}
					top.p_clk.set<bool>(false);
					top.step();
					sample();
					if (ph == 0 && vs && top.p_vedge.get<bool>()) {
						snprintf(buf, sizeof buf, "e %x\n", top.p_cyc.get<uint32_t>());
						out += buf;
					}
					if ((i || ph) && top.p_tapv.get<bool>()) {
						snprintf(buf, sizeof buf, "r %llx\n", (unsigned long long)get64(top.p_tapp));
						out += buf;
					}
					top.p_clk.set<bool>(true);
					top.step();
					sample();
				}
				if (i == 0) {
					top.p_cmdv.set<bool>(false);
					top.p_fwv.set<bool>(false);
				}
			}
			top.p_clk.set<bool>(false);
			top.step();
			if (top.p_tapv.get<bool>())
				snprintf(buf, sizeof buf, "t %llx\nok\n", (unsigned long long)get64(top.p_tapp));
			else
				snprintf(buf, sizeof buf, "t -\nok\n");
			out += buf;
		} else if (cmd == "names") {
			char buf[512];
			for (auto &kv : items.table) {
				const cxxrtl::debug_item &it = kv.second.at(0);
				snprintf(buf, sizeof buf, "n %s %u %zu %zu\n", kv.first.c_str(), it.type, it.width, it.depth);
				out += buf;
			}
			out += "ok\n";
		} else {
			out = "error bad command " + cmd + "\n";
		}
		fwrite(out.data(), 1, out.size(), stdout);
		fflush(stdout);
	}
	if (vcd) {
		vcd_file.close();
		delete vcd;
	}
	return 0;
}
