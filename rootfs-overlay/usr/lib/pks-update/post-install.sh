#!/bin/sh
# RAUC post-install handler: puts the new slot's UKI on the ESP under that slot's entry name
# (bootchooser.sh), written to a temp file and renamed, so a power cut leaves the old or the new
# UKI, never half of one. The bundle carries uki-A.efi and uki-B.efi (each with its own
# root=PARTUUID); a bundle without UKIs (host tests) changes only the root slot.
set -eu
esp=${PKS_ESP:-/efi}
dir=$esp/EFI/Linux
for slot in $RAUC_TARGET_SLOTS; do
  eval "bootname=\${RAUC_SLOT_BOOTNAME_$slot:-}"
  [ -n "$bootname" ] || continue
  src=$RAUC_BUNDLE_MOUNT_POINT/uki-$bootname.efi
  [ -f "$src" ] || continue
  for f in "$dir"/pks-*-"$bootname".efi "$dir"/pks-*-"$bootname"+*.efi; do
    [ -e "$f" ] || continue
    cp "$src" "$f.new"
    sync -f "$f.new" 2>/dev/null || sync
    mv -f "$f.new" "$f"
  done
done
