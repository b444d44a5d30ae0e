#!/usr/bin/env bash
# Install the system packages copperline needs when they are missing: Icarus Verilog
# (cocotb), a C++ compiler, make and perl (the Verilator/CXXRTL simulators), socat and jq
# (the shell client examples), fpga-icestorm (icebox_vlog: `copper board sim --from-bitstream`). As root we install
# them with apt-get; otherwise we print the exact command and stop.
set -euo pipefail

missing=()
command -v iverilog >/dev/null 2>&1 || missing+=(iverilog)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v perl >/dev/null 2>&1 || missing+=(perl)
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v icebox_vlog >/dev/null 2>&1 || missing+=(fpga-icestorm)

[ ${#missing[@]} -eq 0 ] && exit 0

cmd="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "copperline needs: ${missing[*]}" >&2
    echo "Install them with:  sudo sh -c '$cmd'" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "copperline needs: ${missing[*]} (no apt-get here: install them with your package manager)" >&2
    exit 1
fi
echo "==> installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
