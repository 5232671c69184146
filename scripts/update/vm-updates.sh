#!/usr/bin/env bash
# The A/B update steps of the VM test (issue 13 §7), sourced by scripts/vm-test.sh, which owns the
# VM (gx runs a command in the guest, say logs, wait_services waits for every PKS service).
#
# Bundles are made on the host from the image the test booted (.cache/image/out: root.img, the
# two slot UKIs, expected-pcrs.json), signed with the dev maintenance key whose CA is the
# image's keyring, each with a measurement manifest signed by the image signing key for its
# release (the running slot's vault authorises the new slot from it). Maintenance brings them on
# a USB stick (a FAT image plugged into the VM's xHCI, boot.sh usb-attach) and installs them with
# `pksctl update install /run/pks-usb/FILE`, as on a real box. (The plant network through QEMU's
# user networking moved a 250 MiB bundle at well under 1 MiB/s under TCG.)
#
#   upd_build full|short       bundles: v2 and v4 (and v3 with a broken service: full), a v1 for
#                              the downgrade, one signed by a foreign CA (run in the background)
#   upd_serve                  waits for them
#   upd_update_v2              v1 -> v2: install, the box reboots itself into slot B, health
#                              check, mark good, floor 2; sets update_ok, pin_survived_update,
#                              downgrade_refused, bad_signature_refused and the figures
#   upd_start_install NAME     starts an install in the guest and returns once RAUC writes the
#                              slot (the power cut comes next)
#   upd_after_cut              after that power cut: the old slot booted, the update reported
#                              PKS_UPDATE_INTERRUPTED (power_cut_install_ok)
#   upd_fallback_v3            v3 fails its health check and the box falls back to v2 (fallback_ok)
#   upd_stop                   pulls the stick
set -euo pipefail
# shellcheck source=../jq-check.sh
. "$root/scripts/jq-check.sh"

upd_dir=$state/updates upd_build_pid= upd_stick_qemu=
update_ok=false fallback_ok=false downgrade_refused=false bad_signature_refused=false power_cut_install_ok=false
data_intact=false pin_survived_update=false
update_bundle_mib=0 update_install_s=0 update_downtime_s=0

# the slot image a bundle carries: the built root.img shrunk to its content (resize2fs -M leaves
# about a third free, room enough for what the root file system gets at run time); RAUC writes
# the whole image, and under TCG every MiB read through dm-verity and squashfs counts
upd_slot_image() {
  local src=$1 dst=$2 blocks bsize
  cp --sparse=always "$src" "$dst"
  e2fsck -fy "$dst" >/dev/null 2>&1 || true
  resize2fs -M "$dst" >/dev/null 2>&1
  blocks=$(dumpe2fs -h "$dst" 2>/dev/null | sed -n 's/^Block count: *//p')
  bsize=$(dumpe2fs -h "$dst" 2>/dev/null | sed -n 's/^Block size: *//p')
  truncate -s $(( blocks * bsize )) "$dst"
}

# upd_bundle VERSION SVN ROOT_IMG OUT [KEYS]
upd_bundle() {
  local version=$1 svn=$2 img=$3 out=$4 keys=${5:-$root/.cache/update-keys} imgout=$root/.cache/image/out
  local m; m=$(mktemp)
  (cd "$root" && node --import tsx services/attest/measurement-manifest-cli.ts --release "$version" --key "$root/.cache/image/pcr-signing.key" --expected "$imgout/expected-pcrs.json") > "$m"
  "$root/scripts/update/bundle.sh" --version "$version" --svn "$svn" --keys "$keys" --rootfs "$img" \
    --uki-a "$imgout/uki-A.efi" --uki-b "$imgout/uki-B.efi" --measurement "$m" --out "$out" >/dev/null
  rm -f "$m"
}

# the bundles (host CPU while the VM boots: run it in the background, then upd_serve)
upd_build() {
  local mode=$1 imgout=$root/.cache/image/out t
  t=$(date +%s)
  rm -rf "$upd_dir"; mkdir -p "$upd_dir/www"
  upd_slot_image "$imgout/root.img" "$upd_dir/slot.img"
  upd_bundle 2.0.0 2 "$upd_dir/slot.img" "$upd_dir/www/v2.raucb"
  # v4 is cut off mid-install and never boots: its image is the same system again
  upd_bundle 4.0.0 4 "$upd_dir/slot.img" "$upd_dir/www/v4.raucb"
  if [ "$mode" = full ]; then
    # v3: the same system with one service that cannot start (its unit file gone), so the new
    # slot boots, opens its gate and then fails the health check
    cp --sparse=always "$upd_dir/slot.img" "$upd_dir/slot-v3.img"
    debugfs -w -R "rm /usr/lib/systemd/system/pks-sentinel.service" "$upd_dir/slot-v3.img" >/dev/null 2>&1
    upd_bundle 3.0.0 3 "$upd_dir/slot-v3.img" "$upd_dir/www/v3.raucb"
    rm -f "$upd_dir/slot-v3.img"
  fi
  # refused before anything is written, so a small payload does: the downgrade and the foreign
  # signer are checked on the bundle, not on its image
  mkdir -p "$upd_dir/tiny/usr/lib"; echo 'VERSION=1.0.0' > "$upd_dir/tiny/usr/lib/pks-release"
  mkfs.ext4 -q -F -d "$upd_dir/tiny" "$upd_dir/tiny.img" 8M
  upd_bundle 1.0.0 1 "$upd_dir/tiny.img" "$upd_dir/www/v1.raucb"
  "$root/scripts/update/keys.sh" --dir "$upd_dir/foreign-keys" init >/dev/null
  upd_bundle 9.0.0 9 "$upd_dir/tiny.img" "$upd_dir/www/foreign.raucb" "$upd_dir/foreign-keys"
  rm -rf "$upd_dir/slot.img" "$upd_dir/tiny" "$upd_dir/tiny.img"
  echo $(( $(stat -c %s "$upd_dir/www/v2.raucb") / 1048576 )) > "$upd_dir/v2.mib"
  # the stick: FAT, as maintenance's would be (mtools: no loop device on the build host)
  local kib; kib=$(( $(du -sk "$upd_dir/www" | cut -f1) + 16384 ))
  mkfs.vfat -C -n PKSUPDATE "$upd_dir/stick.img" "$kib" >/dev/null
  MTOOLS_SKIP_CHECK=1 mcopy -i "$upd_dir/stick.img" "$upd_dir/www/"*.raucb ::/
  rm -rf "$upd_dir/www"
  echo "$(( $(date +%s) - t ))" > "$upd_dir/built"
}

upd_serve() {
  [ -n "${upd_build_pid:-}" ] && { wait "$upd_build_pid" || say "update: building the bundles failed (see $state/update-build.log)"; upd_build_pid=; }
  [ -f "$upd_dir/built" ] || return 1
  update_bundle_mib=$(cat "$upd_dir/v2.mib")
  say "update bundles on the stick: v2 ${update_bundle_mib} MiB, $(MTOOLS_SKIP_CHECK=1 mdir -i "$upd_dir/stick.img" -b ::/ | sed 's|.*/||' | tr '\n' ' ')built in $(cat "$upd_dir/built")s"
}

upd_stop() { [ -n "$upd_stick_qemu" ] && boot usb-detach >/dev/null 2>&1 || true; upd_stick_qemu=; }

# the stick in this QEMU (a power cut pulls it with the machine) and mounted read-only in the guest
upd_fetch() {
  local q attempt
  for attempt in 1 2; do
    q=$(cat "$state/qemu.pid" 2>/dev/null || true)
    if [ "$attempt" = 2 ]; then
      # as maintenance would: pull the stick and plug it in again
      say "update: $1 not readable from the stick; replugging it"
      boot usb-detach >/dev/null 2>&1 || true; upd_stick_qemu=; sleep 3
    fi
    if [ "$upd_stick_qemu" != "$q" ]; then boot usb-attach "$upd_dir/stick.img" >&2 || return 1; upd_stick_qemu=$q; fi
    GX_TIMEOUT=150 gx "for i in \$(seq 60); do [ -e /dev/disk/by-label/PKSUPDATE ] && break; sleep 2; done
      mountpoint -q /run/pks-usb && ! test -s /run/pks-usb/$1 && umount -l /run/pks-usb
      mountpoint -q /run/pks-usb || { mkdir -p /run/pks-usb && timeout 60 mount -o ro /dev/disk/by-label/PKSUPDATE /run/pks-usb; }
      test -s /run/pks-usb/$1" >/dev/null 2>&1 && return 0
    say "update: fetch of $1 (try $attempt): the guest sees $(GX_TIMEOUT=30 gx 'ls /dev/disk/by-label | tr "\n" " "; findmnt -n -o SOURCE,TARGET /run/pks-usb; ls /run/pks-usb 2>&1 | tr "\n" " "' 2>&1 | tr '\n' ' ' | cut -c1-300)"
  done
  return 1
}

upd_status() { GX_TIMEOUT=120 gx 'pksctl update status --json' 2>/dev/null | tail -n 1; }
boot_id() { GX_TIMEOUT=20 gx 'cat /proc/sys/kernel/random/boot_id' 2>/dev/null | tr -d '[:space:]'; }

# waits up to $2 s until the guest runs a boot other than $1 and every service is READY
wait_reboot() {
  local old=$1 deadline=$(( $(date +%s) + $2 )) id
  while [ "$(date +%s)" -lt "$deadline" ]; do
    id=$(boot_id || true)
    if [ -n "$id" ] && [ "$id" != "$old" ]; then boots=$((boots + 1)); wait_services $(( deadline - $(date +%s) )); return; fi
    sleep 5
  done
  return 1
}

upd_update_v2() {
  upd_fetch v2.raucb || { say "update: the box could not fetch v2"; return 0; }
  # (u0, not t0: say() reads vm-test's t0, and a local would shadow it)
  local before id u0 t_drain= t_inst= t_done= st ph
  # (exit 1 while no checkpoint is anchored at the KMS yet: the JSON is what counts)
  before=$(GX_TIMEOUT=300 gx 'pksctl audit verify --json; true' 2>/dev/null | tail -n 1 || true)
  id=$(boot_id || true)
  u0=$(date +%s)
  # maintenance's command, in the guest's background; its phases are timed from the status
  gx "systemd-run --unit pks-vmtest-install --collect pksctl update install /run/pks-usb/v2.raucb --json" >/dev/null 2>&1 \
    || { say "update: pksctl update install did not start"; return 0; }
  while [ $(( $(date +%s) - u0 )) -lt 1800 ]; do
    st=$(GX_TIMEOUT=30 gx 'pksctl update status --json' 2>/dev/null | tail -n 1 || true)
    ph=$(jq -r '.phase // ""' <<<"$st" 2>/dev/null || true)
    case "$ph" in
      draining) [ -n "$t_drain" ] || t_drain=$(date +%s) ;;
      installing) [ -n "$t_drain" ] || t_drain=$(date +%s); [ -n "$t_inst" ] || t_inst=$(date +%s) ;;
      rebooting) t_done=$(date +%s); break ;;
      idle) jqe '.last.version == "2.0.0"' <<<"$st" >/dev/null 2>&1 && { say "update: v2 ended before the reboot: $st"; return 0; } ;;
    esac
    # no answer: the box is already going down for the reboot
    [ -z "$st" ] && [ -n "$t_inst" ] && { t_done=$(date +%s); break; }
    sleep 2
  done
  [ -n "$t_done" ] || { say "update: v2 never reached the reboot: $st"; return 0; }
  update_install_s=$(( t_done - ${t_inst:-$u0} ))
  say "update: v2 checked and copied in $(( ${t_drain:-$u0} - u0 ))s, drained in $(( ${t_inst:-$t_done} - ${t_drain:-$u0} ))s, installed into slot B in ${update_install_s}s; the box reboots into it"
  wait_reboot "$id" 900 || { say "update: v2 did not come up READY"; return 0; }
  # the line's downtime: from the drain (no new reservations) to every service READY on v2
  update_downtime_s=$(( $(date +%s) - ${t_drain:-$u0} ))
  upd_check_v2 "$before"
}

# on v2: what the box reports, the PIN, the data, and the two refusals ($1: the audit before)
upd_check_v2() {
  local before=$1 out st
  st=$(upd_status || true)
  say "update: $st"
  jqe '.last.ok == true and .last.version == "2.0.0" and .booted.version == "2.0.0" and .booted.slot == "B" and .floor == 2 and .phase == "idle"' <<<"$st" >/dev/null && update_ok=true
  # the sealed PIN opened on the new slot through the signed PCR 11 policy (no re-provisioning):
  # slot B's UKI booted, pks-unseal ran in this boot, the vault READY, measured boot as expected
  GX_TIMEOUT=300 gx 'grep -q "rauc.slot=B" /proc/cmdline && systemctl is-active -q pks-unseal pks-vault && test -s /run/credstore/hsm-pin && pksctl status >/dev/null' >/dev/null 2>&1 && pin_survived_update=true
  # the data partition is the same: setup did not run again, the audit chain verifies and kept every entry
  local after; after=$(GX_TIMEOUT=300 gx 'pksctl audit verify --json; true' 2>/dev/null | tail -n 1 || true)
  GX_TIMEOUT=60 gx 'test -e /var/lib/pks/.provisioned && [ "$(systemctl show -P ConditionResult pks-setup)" = no ] && findmnt -n /etc/pks >/dev/null' >/dev/null 2>&1 \
    && jqe --argjson b "$before" '.ok == true and ($b.ok == true) and .headSeq >= $b.headSeq' <<<"$after" >/dev/null 2>&1 && data_intact=true
  say "update: audit before $(jq -c '{ok,headSeq}' <<<"$before" 2>/dev/null) after $(jq -c '{ok,headSeq}' <<<"$after" 2>/dev/null); data intact: $data_intact; PIN unsealed on slot B: $pin_survived_update"
  # v1 below the floor: refused before anything is written
  upd_fetch v1.raucb || true
  out=$(GX_TIMEOUT=600 gx 'pksctl update install /run/pks-usb/v1.raucb --json; echo "rc=$?"' 2>&1 || true)
  grep -q 'PKS_UPDATE_DOWNGRADE' <<<"$out" && ! grep -q 'rc=0' <<<"$out" && downgrade_refused=true
  say "update: downgrade to 1.0.0: $(grep -o 'PKS_[A-Z_]*[^"]*' <<<"$out" | head -n 1)"
  upd_fetch foreign.raucb || true
  out=$(GX_TIMEOUT=600 gx 'pksctl update install /run/pks-usb/foreign.raucb --json; echo "rc=$?"' 2>&1 || true)
  grep -q 'PKS_UPDATE_SIGNATURE' <<<"$out" && ! grep -q 'rc=0' <<<"$out" && bad_signature_refused=true
  say "update: bundle of a foreign CA: $(grep -o 'PKS_[A-Z_]*[^"]*' <<<"$out" | head -n 1)"
  st=$(upd_status || true)
  jqe '.booted.version == "2.0.0" and .phase == "idle"' <<<"$st" >/dev/null || { downgrade_refused=false; bad_signature_refused=false; }
}

# starts the install of bundle $1 in the background in the guest; returns once RAUC is writing
upd_start_install() {
  upd_fetch "$1" || { say "update: the box could not fetch $1"; return 1; }
  gx "systemd-run --unit pks-vmtest-install --collect pksctl update install /run/pks-usb/$1 --json" >/dev/null 2>&1 || return 1
  local i st
  for i in $(seq 1 300); do
    st=$(upd_status || true)
    if jqe '.phase == "installing" and .progress >= 10' <<<"$st" >/dev/null 2>&1; then say "update: $1 installing ($(jq -r '.progress' <<<"$st")%)"; return 0; fi
    sleep 2
  done
  say "update: $1 never reached the install phase: $st"
  return 1
}

upd_after_cut() {
  local st; st=$(upd_status || true)
  say "update after the power cut: $st"
  jqe '.booted.version == "2.0.0" and .booted.slot == "B" and .phase == "idle" and .last.ok == false and .last.code == "PKS_UPDATE_INTERRUPTED" and .last.version == "4.0.0"' <<<"$st" >/dev/null && power_cut_install_ok=true
}

upd_fallback_v3() {
  upd_fetch v3.raucb || { say "update: the box could not fetch v3"; return 0; }
  local id out st
  id=$(boot_id || true)
  out=$(GX_TIMEOUT=1800 gx 'pksctl update install /run/pks-usb/v3.raucb --json' 2>&1 | tail -n 1) || { say "update: install of v3 failed: $out"; return 0; }
  say "update: v3 installed ($out); it reboots into slot A, fails its health check and falls back"
  # two reboots: into v3, whose health check fails (up to health.timeoutSeconds), and back to B
  local deadline=$(( $(date +%s) + 1800 ))
  wait_reboot "$id" 900 || true
  while [ "$(date +%s)" -lt "$deadline" ]; do
    st=$(upd_status || true)
    jqe '.booted.version == "2.0.0" and .phase == "idle" and .last.version == "3.0.0"' <<<"$st" >/dev/null 2>&1 && break
    sleep 10
  done
  wait_services 300 || true
  say "update after v3: $st"
  jqe '.booted.version == "2.0.0" and .booted.slot == "B" and .last.ok == false and .last.code == "PKS_UPDATE_HEALTH_FAILED" and .last.version == "3.0.0"' <<<"$st" >/dev/null && fallback_ok=true
}
