#!/usr/bin/env bash
# Boots the dev image under QEMU (TCG) with OVMF and a swtpm TPM 2.0.
#
# Usage: scripts/image/boot.sh COMMAND [options]
#   start   [--fresh] [--port N] [--disk PATH] [--mem MiB]
#                        start swtpm + QEMU in the background (state in --state)
#   wait    [--timeout S]  wait for this boot's PKS-VM-REPORT line on the serial console, print it
#   exec    CMD...       run CMD as root in the guest (virtio-console agent), print its output,
#                        exit with its exit code
#   stop    [--timeout S]  orderly poweroff (agent, then ACPI), QEMU killed after the timeout
#   kill                 power cut: SIGKILL QEMU (then swtpm); the disk keeps what was flushed
#   usb-attach FILE      plug FILE (a disk image) in as a read-only USB stick (maintenance's
#                        bundles: the guest sees /dev/sdX, by label); usb-detach pulls it
#   run     [...]        like start, but in the foreground with the serial console on stdio
#   status               print whether QEMU runs and where the files are
# Options valid for every command: --state DIR (default .cache/image/vm)
#
# State directory: disk.qcow2 (copy-on-write overlay on the built disk.raw; --fresh recreates
# it), OVMF_VARS.fd, tpm/ (swtpm state: the TPM survives reboots like a soldered one),
# serial.log (this boot; the previous boot's is serial.prev.log), qemu.pid, swtpm.pid,
# agent.sock (guest command channel), qmp.sock, port.
# Networking: QEMU user networking; host 127.0.0.1:<port> forwards to the guest's 8443 (the
# tester API) and nothing else listens outside loopback; the guest reaches the host at 10.0.2.2.
# /dev/kvm does not run guests on these machines, so it is TCG: a boot to multi-user takes
# roughly a minute with 2 vCPUs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

cmd=${1:-}
[ $# -gt 0 ] && shift
state=$root/.cache/image/vm
disk=$root/.cache/image/out/disk.raw
port=${PKS_VM_PORT:-18443}
mem=2048
fresh=0
timeout=
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --state) state=${2:?}; shift 2 ;;
    --disk) disk=${2:?}; shift 2 ;;
    --port) port=${2:?}; shift 2 ;;
    --mem) mem=${2:?}; shift 2 ;;
    --timeout) timeout=${2:?}; shift 2 ;;
    --fresh) fresh=1; shift ;;
    --) shift; args+=("$@"); break ;;
    *) args+=("$1"); shift ;;
  esac
done
mkdir -p "$state"
state=$(cd "$state" && pwd)

ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd
ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd

alive() { [ -f "$state/$1.pid" ] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }

stop_swtpm() {
  if alive swtpm; then kill "$(cat "$state/swtpm.pid")" 2>/dev/null || true; fi
  rm -f "$state/swtpm.pid" "$state/swtpm.sock"
}

prepare() {
  alive qemu && { echo "boot.sh: a VM already runs with state $state (pid $(cat "$state/qemu.pid"))" >&2; exit 1; }
  [ -f "$disk" ] || { echo "boot.sh: no disk image at $disk (scripts/image/build.sh)" >&2; exit 1; }
  for f in "$ovmf_code" "$ovmf_vars"; do [ -f "$f" ] || { echo "boot.sh: $f missing (apt-get install ovmf)" >&2; exit 1; }; done
  command -v swtpm >/dev/null || { echo "boot.sh: swtpm missing" >&2; exit 1; }
  if [ "$fresh" = 1 ]; then rm -rf "$state/disk.qcow2" "$state/OVMF_VARS.fd" "$state/tpm"; fi
  # A disk built after the overlay was made would be read through a stale overlay: start over.
  if [ -f "$state/disk.qcow2" ] && [ "$disk" -nt "$state/disk.qcow2" ] && [ ! -f "$state/disk.keep" ]; then
    echo "boot.sh: $disk is newer than the VM's overlay; starting from the new image" >&2
    rm -f "$state/disk.qcow2"
  fi
  [ -f "$state/disk.qcow2" ] || qemu-img create -q -f qcow2 -F raw -b "$disk" "$state/disk.qcow2"
  [ -f "$state/OVMF_VARS.fd" ] || cp "$ovmf_vars" "$state/OVMF_VARS.fd"
  if [ ! -d "$state/tpm" ]; then
    mkdir -p "$state/tpm"
    # SHA-256 bank only: the event log and our expected values then have one digest each.
    swtpm_setup --tpm2 --tpmstate "$state/tpm" --pcr-banks sha256 --createek --create-ek-cert \
      --create-platform-cert --overwrite --config /etc/swtpm_setup.conf >"$state/swtpm_setup.log" 2>&1 \
      || swtpm_setup --tpm2 --tpmstate "$state/tpm" --pcr-banks sha256 --overwrite >"$state/swtpm_setup.log" 2>&1 \
      || { cat "$state/swtpm_setup.log" >&2; exit 1; }
  fi
  stop_swtpm
  # One swtpm per boot: it exits when QEMU goes away (--terminate), so a power cut also resets
  # the TPM's volatile state (PCRs) as on real hardware.
  swtpm socket --tpm2 --tpmstate dir="$state/tpm" --ctrl type=unixio,path="$state/swtpm.sock" \
    --terminate --daemon --pid file="$state/swtpm.pid" --log file="$state/swtpm.log",level=1
  for _ in $(seq 50); do [ -S "$state/swtpm.sock" ] && break; sleep 0.1; done
  [ -f "$state/serial.log" ] && mv -f "$state/serial.log" "$state/serial.prev.log"
  : > "$state/serial.log"
  rm -f "$state/agent.sock" "$state/qmp.sock"
  echo "$port" > "$state/port"
}

qemu_args() {
  local serial=$1
  printf '%s\n' \
    -name pks-dev -nodefaults -display none \
    -accel tcg,thread=multi -cpu max -smp 2 -m "$mem" -machine q35 \
    -drive "if=pflash,format=raw,unit=0,readonly=on,file=$ovmf_code" \
    -drive "if=pflash,format=raw,unit=1,file=$state/OVMF_VARS.fd" \
    -drive "if=virtio,format=qcow2,file=$state/disk.qcow2,cache=writeback,discard=unmap" \
    -chardev "socket,id=chrtpm,path=$state/swtpm.sock" \
    -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0 \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:8443" -device virtio-net-pci,netdev=n0 \
    -serial "$serial" \
    -device virtio-serial-pci \
    -chardev "socket,id=agent,path=$state/agent.sock,server=on,wait=off" -device virtconsole,chardev=agent \
    -qmp "unix:$state/qmp.sock,server=on,wait=off" \
    -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0 \
    -device qemu-xhci,id=usb,addr=0x10
  # the xHCI for usb-attach at a fixed slot: QEMU places the if=virtio disk after the -device
  # list, and OVMF's boot entry names the disk by its PCI slot (in the first boot's NVRAM)
}

qmp() {
  # one QMP command on the monitor socket (capabilities handshake first)
  node -e '
    const net = require("node:net");
    const s = net.connect(process.argv[1]);
    // each further argument: a command name, or a whole JSON command object
    const cmds = process.argv.slice(2).map((a) => a.startsWith("{") ? JSON.parse(a) : { execute: a });
    let buf = "", step = 0;
    s.on("data", (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 1);
        const m = JSON.parse(line);
        if (step === 0 && m.QMP) { s.write(JSON.stringify({ execute: "qmp_capabilities" }) + "\n"); step = 1; }
        else if (step >= 1 && ("return" in m || "error" in m)) {
          // step 1: the capabilities answer; step k > 1: the answer to cmds[k - 2]
          if ("error" in m) { console.error(JSON.stringify(m.error)); s.end(); process.exit(1); }
          if (step > cmds.length) { s.end(); process.exit(0); }
          s.write(JSON.stringify(cmds[step - 1]) + "\n"); step++;
        }
      }
    });
    s.on("error", () => process.exit(1));
    setTimeout(() => process.exit(1), 15000);
  ' "$state/qmp.sock" "$@"
}

case "$cmd" in
  start)
    prepare
    mapfile -t qa < <(qemu_args "file:$state/serial.log")
    qemu-system-x86_64 "${qa[@]}" -daemonize -pidfile "$state/qemu.pid" 2>"$state/qemu.err" \
      || { cat "$state/qemu.err" >&2; stop_swtpm; exit 1; }
    echo "boot.sh: VM started (pid $(cat "$state/qemu.pid"), serial $state/serial.log, tester port 127.0.0.1:$port)" >&2
    ;;
  run)
    prepare
    mapfile -t qa < <(qemu_args mon:stdio)
    qemu-system-x86_64 "${qa[@]}" -pidfile "$state/qemu.pid" "${args[@]}" || true
    rm -f "$state/qemu.pid"
    stop_swtpm
    ;;
  wait)
    limit=${timeout:-420}
    for ((i = 0; i < limit * 2; i++)); do
      line=$(grep -a -o 'PKS-VM-REPORT {.*}' "$state/serial.log" 2>/dev/null | tail -1 || true)
      if [ -n "$line" ]; then echo "${line#PKS-VM-REPORT }"; exit 0; fi
      alive qemu || { echo "boot.sh: QEMU exited before the boot report (see $state/serial.log)" >&2; exit 1; }
      sleep 0.5
    done
    echo "boot.sh: no boot report after ${limit}s (see $state/serial.log)" >&2
    exit 1
    ;;
  exec)
    [ ${#args[@]} -gt 0 ] || { echo "boot.sh exec: no command" >&2; exit 2; }
    exec node --import tsx "$here/vm-exec.ts" "$state/agent.sock" "${timeout:-120}" "${args[*]}"
    ;;
  stop)
    limit=${timeout:-90}
    if alive qemu; then
      # the agent's poweroff is the orderly path; ACPI power button as the fallback
      node --import tsx "$here/vm-exec.ts" "$state/agent.sock" 10 'systemctl --no-block poweroff' >/dev/null 2>&1 \
        || qmp system_powerdown || true
      for ((i = 0; i < limit * 2; i++)); do alive qemu || break; sleep 0.5; done
      if alive qemu; then
        echo "boot.sh: VM did not power off in ${limit}s; killing it" >&2
        kill -9 "$(cat "$state/qemu.pid")" 2>/dev/null || true
      fi
    fi
    rm -f "$state/qemu.pid"
    stop_swtpm
    ;;
  kill)
    if alive qemu; then kill -9 "$(cat "$state/qemu.pid")"; fi
    for _ in $(seq 50); do alive qemu || break; sleep 0.1; done
    rm -f "$state/qemu.pid"
    stop_swtpm
    ;;
  usb-attach)
    [ ${#args[@]} -eq 1 ] && [ -f "${args[0]}" ] || { echo "boot.sh usb-attach: one image file" >&2; exit 2; }
    alive qemu || { echo "boot.sh: QEMU is not running" >&2; exit 1; }
    f=$(cd "$(dirname "${args[0]}")" && pwd)/$(basename "${args[0]}")
    qmp "{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"raw\",\"node-name\":\"stick\",\"read-only\":true,\"file\":{\"driver\":\"file\",\"filename\":\"$f\",\"read-only\":true}}}" \
        '{"execute":"device_add","arguments":{"driver":"usb-storage","bus":"usb.0","drive":"stick","id":"stick","removable":true}}'
    ;;
  usb-detach)
    alive qemu || exit 0
    qmp '{"execute":"device_del","arguments":{"id":"stick"}}' || true
    sleep 2
    qmp '{"execute":"blockdev-del","arguments":{"node-name":"stick"}}' || true
    ;;
  status)
    if alive qemu; then echo "running pid=$(cat "$state/qemu.pid") port=$(cat "$state/port" 2>/dev/null) state=$state"
    else echo "stopped state=$state"; exit 3; fi
    ;;
  *)
    sed -n '2,27p' "$0" >&2
    exit 2
    ;;
esac
