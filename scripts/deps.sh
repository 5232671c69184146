#!/usr/bin/env bash
# Installs what the dev machine and CI need, idempotently: Debian packages that are missing
# (one apt-get update, only when something is missing) and the npm lockfile.
# Usage: scripts/deps.sh [base|test|demo|bench|image|update]...
set -euo pipefail
cd "$(dirname "$0")/.."

base=(softhsm2 opensc openssl libsystemd-dev jq)
test=(mosquitto mosquitto-clients swtpm swtpm-tools tpm2-tools python3-aiosmtpd python3-cryptography systemd tshark nftables iproute2 socat strace chromium libnss3-tools python3-scapy tmux e2fsprogs)
demo=(mosquitto mosquitto-clients)
bench=(postgresql)
# RAUC bundles and their host tests: rauc (1.8), mksquashfs/unsquashfs, a private D-Bus for `rauc service`
update=(rauc squashfs-tools dbus-daemon openssl swtpm swtpm-tools tpm2-tools)
image=(debootstrap qemu-system-x86 qemu-utils ovmf systemd-boot-efi binutils dosfstools mtools fdisk e2fsprogs cpio zstd swtpm swtpm-tools tpm2-tools jq)

want=("${base[@]}")
for set in "$@"; do
  case "$set" in
    base) ;;
    test) want+=("${test[@]}") ;;
    demo) want+=("${demo[@]}") ;;
    bench) want+=("${bench[@]}") ;;
    image) want+=("${image[@]}") ;;
    update) want+=("${update[@]}") ;;
    *) echo "deps.sh: unknown set '$set'" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root may capture; answer once, non-interactively
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -q >/dev/null
  $sudo_ apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm packages from the lockfile; skip when node_modules already matches it
stamp=node_modules/.pks-lock-sha
want_sha=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -L node_modules ] && { [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want_sha" ]; }; then
  # a worktree sharing another checkout's node_modules: npm ci would replace the link and empty
  # the shared tree under every other worktree; the owner of the tree installs it
  echo "deps: node_modules is a link to a shared tree whose stamp does not match package-lock.json; not running npm ci through it" >&2
elif [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want_sha" ]; then
  echo "deps: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  echo "$want_sha" > "$stamp"
fi
