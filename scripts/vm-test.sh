#!/usr/bin/env bash
# System test of the appliance as one box: builds the dev image, boots it under QEMU (OVMF +
# swtpm), waits for every PKS service to be READY, injects ECUs from the host through the
# forwarded tester port, and runs the power-cut loop (QEMU SIGKILLed mid-injection, reboot,
# check that nothing was issued twice or lost and the audit chain verifies).
# Its last line is one JSON object:
#   {"services_ready":N,"of":M,"injected":N,"power_cuts":N,"duplicates":0,"lost":0,"ok":true}
#
# Usage: scripts/vm-test.sh [--no-build] [--cuts N] [--port P] [--state DIR]
#   --cuts N   power cuts (default 20; CI may pass fewer)
#
# Hooks (the parts that depend on the services; each is a shell command run on the host with
# PKS_VM_PORT, PKS_VM_STATE and PKS_VM_EXEC exported; PKS_VM_EXEC runs a command in the guest):
#   PKS_VM_PROVISION  once after the first boot, before waiting for the services (e.g. write
#                     /etc/pks/*.json and the HSM token through "$PKS_VM_EXEC"); default: none
#   PKS_VM_INJECT     start injecting ECUs through 127.0.0.1:$PKS_VM_PORT in the background and
#                     print its PID; it must append one line per confirmed package to
#                     $PKS_VM_STATE/confirmed.log ("<ecu> <slot> <key id>"); default: none
#   PKS_VM_CHECK      after each reboot: print one JSON object {"issued":N,"duplicates":N,
#                     "lost":N,"audit_ok":true} comparing the box's records with confirmed.log;
#                     default: none (counts stay 0)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

build=1
cuts=${PKS_VM_CUTS:-20}
port=${PKS_VM_PORT:-18443}
state=$root/.cache/image/vm-test
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0; shift ;;
    --cuts) cuts=${2:?}; shift 2 ;;
    --port) port=${2:?}; shift 2 ;;
    --state) state=${2:?}; shift 2 ;;
    *) echo "vm-test: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[[ "$cuts" =~ ^[0-9]+$ ]] || { echo "vm-test: --cuts needs a number" >&2; exit 2; }

boot() { "$root/scripts/image/boot.sh" "$1" --state "$state" "${@:2}"; }
export PKS_VM_PORT=$port PKS_VM_STATE=$state PKS_VM_EXEC="$root/scripts/image/boot.sh exec --state $state --"
inject_pid=
cleanup() {
  [ -n "$inject_pid" ] && kill "$inject_pid" 2>/dev/null || true
  boot kill >/dev/null 2>&1 || true
}
trap cleanup EXIT

services_ready=0 of=0 injected=0 power_cuts=0 duplicates=0 lost=0 audit_ok=true
result() {
  local ok=false
  [ "$duplicates" = 0 ] && [ "$lost" = 0 ] && [ "$audit_ok" = true ] && [ "$of" -gt 0 ] && [ "$services_ready" = "$of" ] && ok=true
  printf '{"services_ready":%d,"of":%d,"injected":%d,"power_cuts":%d,"duplicates":%d,"lost":%d,"audit_ok":%s,"ok":%s}\n' \
    "$services_ready" "$of" "$injected" "$power_cuts" "$duplicates" "$lost" "$audit_ok" "$ok"
  [ "$ok" = true ]
}

# Every PKS service of the image: the units pks.target wants. READY = active (Type=notify units
# are active only after READY=1), running as its own (non-root) user.
count_ready() {
  local out
  out=$(boot exec --timeout 60 -- 'for u in $(systemctl list-dependencies --plain --no-legend pks.target | sed "s/^[^a-z]*//" | grep "^pks-.*\.service$"); do
      s=$(systemctl show -P ActiveState "$u"); t=$(systemctl show -P Type "$u"); user=$(systemctl show -P User "$u")
      echo "$u $s $t ${user:-root}"; done') || return 1
  of=$(printf '%s\n' "$out" | grep -c '\.service' || true)
  services_ready=$(printf '%s\n' "$out" | awk '$2 == "active" && $4 != "root"' | grep -c . || true)
  printf '%s\n' "$out" >&2
}

wait_services() { # up to $1 seconds
  local deadline=$(( $(date +%s) + $1 ))
  while :; do
    count_ready || true
    [ "$of" -gt 0 ] && [ "$services_ready" = "$of" ] && return 0
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    sleep 5
  done
}

check_records() {
  [ -n "${PKS_VM_CHECK:-}" ] || return 0
  local j
  j=$(bash -c "$PKS_VM_CHECK") || { audit_ok=false; return 0; }
  injected=$(jq -r '.issued // 0' <<<"$j")
  duplicates=$(( duplicates + $(jq -r '.duplicates // 0' <<<"$j") ))
  lost=$(( lost + $(jq -r '.lost // 0' <<<"$j") ))
  [ "$(jq -r '.audit_ok' <<<"$j")" = true ] || audit_ok=false
}

# 1. build and first boot
[ "$build" = 1 ] && "$root/scripts/image/build.sh" >&2
boot start --fresh --port "$port" >&2
boot wait >&2 || { result; exit 1; }
[ -n "${PKS_VM_PROVISION:-}" ] && bash -c "$PKS_VM_PROVISION" >&2
if ! wait_services 300; then echo "vm-test: not every service is READY" >&2; result; exit 1; fi
boot exec --timeout 60 -- 'pksctl status' >&2 || echo "vm-test: measured boot status is not OK" >&2

# 2. TODO(lead): a killed service is restarted by systemd; a hung event loop is restarted by
#    the watchdog. Sketch: boot exec 'systemctl kill -s KILL pks-keystore; sleep 10;
#    systemctl is-active pks-keystore' and 'kill -STOP $(systemctl show -P MainPID pks-vault)'
#    then wait WatchdogSec and check NRestarts grew.

# 3. the power-cut loop
: > "$state/confirmed.log"
for ((i = 1; i <= cuts; i++)); do
  if [ -n "${PKS_VM_INJECT:-}" ]; then inject_pid=$(bash -c "$PKS_VM_INJECT"); fi
  sleep $(( (RANDOM % 10) + 5 ))             # somewhere in the middle of the injections
  boot kill >&2                              # power cut: QEMU SIGKILLed, swtpm goes with it
  power_cuts=$i
  [ -n "$inject_pid" ] && { kill "$inject_pid" 2>/dev/null || true; wait "$inject_pid" 2>/dev/null || true; inject_pid=; }
  boot start --port "$port" >&2              # same disk overlay, TPM state and OVMF vars
  boot wait >&2 || { result; exit 1; }
  wait_services 300 || { echo "vm-test: services not READY after power cut $i" >&2; result; exit 1; }
  check_records
done

boot stop >&2
trap - EXIT
result
