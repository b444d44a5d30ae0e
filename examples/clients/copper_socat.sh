#!/bin/sh
# Drive copperd from the shell with socat + jq: load a program, start it, show 3 IRQ
# events, stop and unload it. Usage: copper_socat.sh [SOCKET] [PROGRAM.json]
# SOCKET may be a path or @name (abstract). Needs: socat, jq.
set -eu
SOCK=${1:-${COPPERD_SOCKET:-/run/copperline/copperd.sock}}
PROG=${2:-$(dirname "$0")/../tick.json}
case "$SOCK" in
  @*) ADDR="ABSTRACT-CONNECT:${SOCK#@}" ;;
  *)  ADDR="UNIX-CONNECT:$SOCK" ;;
esac
for tool in socat jq; do
  command -v "$tool" >/dev/null || { echo "copper_socat.sh: needs $tool" >&2; exit 2; }
done

# One request, one response line (-t: wait up to 2 s for the answer after sending).
req() { printf '%s\n' "$1" | socat -t 2 - "$ADDR" | head -n 1; }

req '{"cmd":"ping"}' | jq -r '"connected to \(.name) \(.version), protocol \(.protocol)"'

# Load: the program JSON goes inline in the request (one line: jq -c).
resp=$(req "$(jq -c '{cmd:"load",program:.}' "$PROG")")
[ "$(printf '%s' "$resp" | jq -r .ok)" = true ] || { printf '%s\n' "$resp" >&2; exit 1; }
ID=$(printf '%s' "$resp" | jq -r .result.id)
echo "loaded $PROG as program $ID"

# Subscribe and start on one connection, then read events for a moment.
printf '%s\n%s\n' \
  "{\"cmd\":\"subscribe\",\"events\":[\"irq\"],\"prog\":$ID}" \
  "{\"cmd\":\"start\",\"id\":$ID}" \
  | socat -t 0.5 - "$ADDR" 2>/dev/null \
  | jq -c 'select(.event == "irq") | {tag, prog, time_us}' | head -n 3

req "{\"cmd\":\"status\",\"id\":$ID}" | jq -c '{state, pc}'
req "{\"cmd\":\"stop\",\"id\":$ID}" >/dev/null
req "{\"cmd\":\"unload\",\"id\":$ID}" | jq -c .
