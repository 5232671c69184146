#!/bin/sh
# RAUC custom bootloader backend (system.conf: bootloader=custom) over systemd-boot's automatic
# boot assessment. Each slot boots its own UKI on the ESP, named
#   EFI/Linux/pks-<gen>-<slot>[+<left>[-<done>]].efi
# systemd-boot (loader.conf: default pks-*) lists UKIs newest version first (strverscmp, so the
# highest <gen> wins), sorts entries with no tries left (+0) to the end and decrements <left> on
# every boot attempt; systemd-bless-boot would strip the counter on boot-complete.target, here
# our health check does it through `rauc status mark-good` -> set-state good. The counter lives
# in a file name on the ESP: a FAT rename is the only write, so a power cut leaves either name.
#   get-primary            the slot systemd-boot boots next
#   set-primary SLOT       SLOT first (gen = max + 1), with PKS_BOOT_TRIES (3) tries
#   get-state SLOT         good | bad (bad = no tries left)
#   set-state SLOT good|bad   good: counter stripped (blessed); bad: +0, never tried again
# $PKS_ESP is the ESP mount point (default /efi); tests point it at a directory.
set -eu
esp=${PKS_ESP:-/efi}
dir=$esp/EFI/Linux
tries=${PKS_BOOT_TRIES:-3}

die() { echo "bootchooser: $*" >&2; exit 1; }
slot_ok() { case "$1" in A|B) ;; *) die "bad slot '$1'" ;; esac; }
# the one file of SLOT, or nothing
file_of() { for f in "$dir"/pks-*-"$1".efi "$dir"/pks-*-"$1"+*.efi; do [ -e "$f" ] && { echo "$f"; return 0; }; done; return 0; }
gen_of() { basename "$1" | sed -n 's/^pks-\([0-9][0-9]*\)-.*/\1/p'; }
left_of() { basename "$1" | sed -n 's/^pks-[0-9]*-[AB]+\([0-9][0-9]*\).*/\1/p'; }
is_bad() { [ "$(left_of "$1")" = 0 ]; }
max_gen() { m=0; for s in A B; do f=$(file_of $s); [ -n "$f" ] && g=$(gen_of "$f") && [ "$g" -gt "$m" ] && m=$g; done; echo "$m"; }
# rename on the same file system: atomic on ext4, a single directory entry update on FAT
move() { [ "$1" = "$2" ] || { mv -f "$1" "$2"; sync -f "$dir" 2>/dev/null || sync; }; }

cmd=${1:-}
case "$cmd" in
  get-primary)
    best= bestgen=-1
    for s in A B; do
      f=$(file_of $s); [ -n "$f" ] || continue
      g=$(gen_of "$f"); is_bad "$f" && g=$((g - 1000000))
      [ "$g" -gt "$bestgen" ] && { best=$s; bestgen=$g; }
    done
    [ -n "$best" ] || die "no UKI on $dir"
    echo "$best"
    ;;
  set-primary)
    slot_ok "${2:-}"; f=$(file_of "$2"); [ -n "$f" ] || die "slot $2 has no UKI"
    g=$(($(max_gen) + 1))
    move "$f" "$dir/pks-$g-$2+$tries-0.efi"
    ;;
  get-state)
    slot_ok "${2:-}"; f=$(file_of "$2"); [ -n "$f" ] || { echo bad; exit 0; }
    if is_bad "$f"; then echo bad; else echo good; fi
    ;;
  set-state)
    slot_ok "${2:-}"; f=$(file_of "$2"); [ -n "$f" ] || die "slot $2 has no UKI"
    g=$(gen_of "$f")
    case "${3:-}" in
      good) move "$f" "$dir/pks-$g-$2.efi" ;;
      bad) move "$f" "$dir/pks-$g-$2+0-$tries.efi" ;;
      *) die "state must be good or bad" ;;
    esac
    ;;
  *) die "unknown command '$cmd'" ;;
esac
