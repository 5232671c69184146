#!/usr/bin/env bash
# What the dev image needs for A/B updates, as functions the image build and the VM test call
# (scripts/image/build.sh and scripts/vm-test.sh belong to the image work; this file only
# offers the pieces). NOT YET RUN IN THE VM: every function is written against the layout the
# host tests use (test/update/rauc-host.ts), whose bootchooser, handlers and updater are the
# same files.
#
#   source scripts/update/vm-updates.sh
#   pks_update_root ROOTDIR KEYSDIR        RAUC config, keyring, mounts into the staged root
#   pks_update_esp ESPDIR UKI_A UKI_B      systemd-boot + loader.conf + the two slot UKIs
#   pks_update_disk DISK ESP_IMG ROOT_IMG DATA_MIB
#                                          GPT: ESP, rootfs_a (ROOT_IMG), rootfs_b (empty), data
#   pks_update_bundle VERSION SVN ROOT_IMG UKI_A UKI_B OUT [--break-service UNIT]
#   pks_update_vm_test                      the `vm-test --updates` scenario; prints the verdict
#
# Hooks (for the lead; names as in scripts/image/build.sh today):
#  1. build.sh, after the rootfs-overlay copy:      pks_update_root "$root" "$repo/.cache/update-keys"
#  2. uki.sh: build twice, CMDLINE with root=PARTLABEL=rootfs_a rauc.slot=A, and rootfs_b / B
#  3. build.sh, ESP step (instead of copying the UKI to /EFI/BOOT/BOOTX64.EFI):
#                                                    pks_update_esp "$esp_dir" "$uki_a" "$uki_b"
#  4. build.sh, GPT step (instead of ESP + one root): pks_update_disk "$img/disk.raw" "$img/esp.img" "$img/root.img" 512
#  5. image deps (scripts/deps.sh image): + rauc squashfs-tools (the set `update` has them)
#     guest packages (recipe.sh): + rauc squashfs-tools systemd-boot-efi tpm2-tools
#  6. pks-setup (first boot): define the version floor once, see pks_update_define_floor
#  7. vm-test.sh --updates:                          pks_update_vm_test (needs vm_exec and vm_put)
#  8. expected PCRs: PCR 4 now also measures systemd-boot, and each slot's UKI differs in its
#     .cmdline (PCR 11 per slot); the sealed PIN survives only through the signed PCR 11 policy.
set -euo pipefail
_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

pks_update_root() {
  local root=$1 keys=$2
  [ -f "$keys/keyring.pem" ] || "$_repo/scripts/update/keys.sh" --dir "$keys" init
  install -d -m 0755 "$root/etc/rauc" "$root/efi"
  install -m 0644 "$_repo/scripts/update/dev-image/system.conf" "$root/etc/rauc/system.conf"
  install -m 0644 "$keys/keyring.pem" "$root/etc/rauc/keyring.pem"
  # the data partition outlives both slots: keystore, sealed credentials, RAUC status, updater state
  cat >> "$root/etc/fstab" <<FSTAB
PARTLABEL=ESP       /efi           vfat  umask=0077,nofail  0 2
PARTLABEL=data      /var/lib/pks   ext4  defaults,nofail    0 2
FSTAB
  printf '{"boxId":"%s","stateDir":"/var/lib/pks/updater"}\n' "${PKS_BOX_ID:-box-vm}" > "$root/etc/pks/updater.json"
}

pks_update_esp() {
  local esp=$1 uki_a=$2 uki_b=$3
  install -d "$esp/EFI/BOOT" "$esp/EFI/Linux" "$esp/loader"
  install -m 0644 /usr/lib/systemd/boot/efi/systemd-bootx64.efi "$esp/EFI/BOOT/BOOTX64.EFI"
  printf 'default pks-*\ntimeout 0\n' > "$esp/loader/loader.conf"
  install -m 0644 "$uki_a" "$esp/EFI/Linux/pks-1-A.efi"
  # B has never been installed: no tries left, systemd-boot never picks it
  install -m 0644 "$uki_b" "$esp/EFI/Linux/pks-0-B+0-3.efi"
}

pks_update_disk() {
  local disk=$1 esp=$2 root=$3 data_mib=$4
  local esp_mib root_mib
  esp_mib=$(( $(stat -c %s "$esp") / 1048576 ))
  root_mib=$(( ($(stat -c %s "$root") + 1048575) / 1048576 ))
  local total=$(( 2 + esp_mib + 2 * root_mib + data_mib ))
  rm -f "$disk"; truncate -s "${total}M" "$disk"
  sfdisk -q --no-reread --no-tell-kernel "$disk" <<SF
label: gpt
start=2048, size=$((esp_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="ESP"
size=$((root_mib * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="rootfs_a"
size=$((root_mib * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="rootfs_b"
size=$((data_mib * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="data"
SF
  dd if="$esp" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$root" of="$disk" bs=1M seek=$((1 + esp_mib)) conv=notrunc,sparse status=none
  local data_img; data_img=$(mktemp); truncate -s "${data_mib}M" "$data_img"; mkfs.ext4 -q -L data "$data_img"
  dd if="$data_img" of="$disk" bs=1M seek=$((1 + esp_mib + 2 * root_mib)) conv=notrunc,sparse status=none
  rm -f "$data_img"
}

# the setup step (a-image's pks-setup): once, before the first update
pks_update_define_floor() {
  tpm2_nvdefine 0x01500016 -C o -s 8 -a "nt=1|ownerread|ownerwrite|authread|authwrite|no_da"
  tpm2_nvincrement 0x01500016 -C o
}

pks_update_bundle() {
  local version=$1 svn=$2 root=$3 uki_a=$4 uki_b=$5 out=$6 brk=${8:-}
  local img=$root
  if [ "${7:-}" = "--break-service" ]; then
    # v3 of the scenario: the same root with one service that cannot start (fails the health check)
    img=$(mktemp); cp --sparse=always "$root" "$img"
    debugfs -w -R "rm /usr/lib/systemd/system/$brk" "$img" >/dev/null
  fi
  "$_repo/scripts/update/bundle.sh" --version "$version" --svn "$svn" --rootfs "$img" --uki-a "$uki_a" --uki-b "$uki_b" --out "$out"
  [ "$img" = "$root" ] || rm -f "$img"
}

# vm-test --updates. Needs from vm-test.sh: vm_exec CMD (root shell in the guest, prints stdout),
# vm_put HOSTFILE GUESTPATH, vm_reboot, vm_power_cut, and the built $root_img $uki_a $uki_b.
pks_update_vm_test() {
  local out; out=$(mktemp -d)
  local update_ok=false fallback_ok=false downgrade_refused=false bad_signature_refused=false power_cut_install_ok=false data_intact=false pin_survived_update=false
  pks_update_bundle 1.0.1 1 "$root_img" "$uki_a" "$uki_b" "$out/v1.raucb"
  pks_update_bundle 2.0.0 2 "$root_img" "$uki_a" "$uki_b" "$out/v2.raucb"
  pks_update_bundle 3.0.0 3 "$root_img" "$uki_a" "$uki_b" "$out/v3.raucb" --break-service pks-sentinel.service
  local before; before=$(vm_exec 'pksctl audit verify --json')
  # 1. v1 -> v2 -> reboot -> mark good; v2 reported
  vm_put "$out/v2.raucb" /tmp/v2.raucb
  vm_exec 'pksctl update install /tmp/v2.raucb' && vm_reboot
  vm_exec 'pksctl update status --json' | jq -e '.last.ok and .booted.version == "2.0.0" and .floor == 2' >/dev/null && update_ok=true
  vm_exec 'systemctl is-active pks-vault.service' | grep -qx active && pin_survived_update=true
  # 2. v3 fails its health check and falls back to v2
  vm_put "$out/v3.raucb" /tmp/v3.raucb
  vm_exec 'pksctl update install /tmp/v3.raucb' && vm_reboot && vm_reboot
  vm_exec 'pksctl update status --json' | jq -e '.last.code == "PKS_UPDATE_HEALTH_FAILED" and .booted.version == "2.0.0"' >/dev/null && fallback_ok=true
  # 3. a downgrade to v1 is refused
  vm_put "$out/v1.raucb" /tmp/v1.raucb
  vm_exec 'pksctl update install /tmp/v1.raucb; echo rc=$?' | grep -q 'PKS_UPDATE_DOWNGRADE' && downgrade_refused=true
  # a bundle signed by another CA
  local other; other=$(mktemp -d); "$_repo/scripts/update/keys.sh" --dir "$other" init
  "$_repo/scripts/update/bundle.sh" --version 9.0.0 --svn 9 --keys "$other" --rootfs "$root_img" --out "$out/foreign.raucb" >/dev/null
  vm_put "$out/foreign.raucb" /tmp/foreign.raucb
  vm_exec 'pksctl update install /tmp/foreign.raucb' 2>&1 | grep -q 'PKS_UPDATE_SIGNATURE' && bad_signature_refused=true
  # 4. a power cut mid-install still boots v2
  pks_update_bundle 4.0.0 4 "$root_img" "$uki_a" "$uki_b" "$out/v4.raucb"
  vm_put "$out/v4.raucb" /tmp/v4.raucb
  vm_exec '(pksctl update install /tmp/v4.raucb >/dev/null 2>&1 &) ; sleep 8' ; vm_power_cut
  vm_exec 'pksctl update status --json' | jq -e '.booted.version == "2.0.0" and .last.code == "PKS_UPDATE_INTERRUPTED"' >/dev/null && power_cut_install_ok=true
  # 5. stock, audit, sealed secrets intact throughout
  local after; after=$(vm_exec 'pksctl audit verify --json')
  jq -e --argjson b "$before" '.ok and .headSeq >= $b.headSeq' <<<"$after" >/dev/null && data_intact=true
  rm -rf "$out" "$other"
  printf '{"update_ok":%s,"fallback_ok":%s,"downgrade_refused":%s,"bad_signature_refused":%s,"power_cut_install_ok":%s,"data_intact":%s,"pin_survived_update":%s}\n' \
    "$update_ok" "$fallback_ok" "$downgrade_refused" "$bad_signature_refused" "$power_cut_install_ok" "$data_intact" "$pin_survived_update"
}
