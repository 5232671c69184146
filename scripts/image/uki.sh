#!/usr/bin/env bash
# Builds the unified kernel image (UKI) from a base rootfs: the systemd-boot EFI stub
# (systemd-boot-efi's linuxx64.efi.stub) with the kernel, initrd, command line and os-release
# added as PE sections by objcopy (bookworm has no ukify). UEFI firmware measures the UKI into
# PCR 4, systemd-stub measures its sections into PCR 11.
# Usage: uki.sh BASE_ROOTFS OUT.efi SLOT
# SLOT (A or B) picks the command line (recipe.sh CMDLINE_A/CMDLINE_B): the UKIs of the two
# slots differ only in it, so each has its own PCR 11 value and the signed PCR 11 policy covers
# both.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=recipe.sh
. "$here/recipe.sh"

base=${1:?usage: uki.sh BASE OUT}
out=${2:?usage: uki.sh BASE OUT SLOT}
slot=${3:?usage: uki.sh BASE OUT SLOT}
case "$slot" in A) CMDLINE=$CMDLINE_A ;; B) CMDLINE=$CMDLINE_B ;; *) echo "uki.sh: slot must be A or B" >&2; exit 2 ;; esac
stub=${PKS_UKI_STUB:-/usr/lib/systemd/boot/efi/linuxx64.efi.stub}
[ -f "$stub" ] || { echo "uki.sh: $stub missing (apt-get install systemd-boot-efi)" >&2; exit 1; }

kernel=$(ls "$base"/boot/vmlinuz-* | sort -V | tail -1)
initrd=$(ls "$base"/boot/initrd.img-* | sort -V | tail -1)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%s' "$CMDLINE" > "$tmp/cmdline"
sed -e '/^IMAGE_ID=/d' "$base/usr/lib/os-release" > "$tmp/os-release"
echo 'IMAGE_ID=pks-dev' >> "$tmp/os-release"

# Section addresses after the stub's own sections (systemd 252's documented layout); the
# kernel gets 16 MiB before the initrd.
objcopy \
  --add-section .osrel="$tmp/os-release" --change-section-vma .osrel=0x20000 \
  --add-section .cmdline="$tmp/cmdline" --change-section-vma .cmdline=0x30000 \
  --add-section .linux="$kernel" --change-section-vma .linux=0x2000000 \
  --add-section .initrd="$initrd" --change-section-vma .initrd=0x3000000 \
  "$stub" "$out.tmp"
mv "$out.tmp" "$out"
echo "uki: $(basename "$kernel") + $(basename "$initrd") -> $out ($(du -h "$out" | cut -f1))" >&2
