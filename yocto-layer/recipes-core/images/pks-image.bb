SUMMARY = "PKS appliance production image"
DESCRIPTION = "Read-only root file system (dm-verity), A/B slots updated by RAUC, TPM 2.0 \
measured boot with a unified kernel image, Node 20 from meta-oe, the PKS services."
LICENSE = "MIT"

inherit core-image features_check
REQUIRED_DISTRO_FEATURES = "pks systemd rauc tpm2"

IMAGE_FEATURES += "read-only-rootfs"
IMAGE_FEATURES:remove = "debug-tweaks"
IMAGE_LINGUAS = ""

IMAGE_INSTALL = " \
    packagegroup-core-boot \
    pks-app \
    pks-conf \
    rauc \
    tpm2-tools \
    libtss2-tcti-device \
    nftables \
    e2fsprogs-mke2fs \
    kernel-module-vcan \
    kernel-module-dm-verity \
"
# The vendor's PKCS#11 module comes from its own layer; SoftHSM only for lab images:
# IMAGE_INSTALL:append = " softhsm"

# Root file system with a dm-verity hash tree (meta-security's dm-verity-img class); the root
# hash goes on the UKI's kernel command line, so PCR 4/11 cover the whole root file system.
IMAGE_CLASSES += "dm-verity-img"
DM_VERITY_IMAGE = "pks-image"
DM_VERITY_IMAGE_TYPE = "ext4"
IMAGE_FSTYPES += "ext4 wic"
WKS_FILE = "pks-ab.wks.in"
# UKI built by wic's bootimg-efi (systemd-boot stub) as EFI/BOOT/BOOTX64.EFI
EFI_PROVIDER = "systemd-boot"

# Writable state lives on /data (mounted by the wks), not on the read-only root.
ROOTFS_POSTPROCESS_COMMAND += "pks_mask_pcr15_users; pks_expected_pcrs; pks_pcr_signing_key;"

# Issue 12: the public half of the image signing key that approves PCR 11 (the UKI) for the
# sealed HSM PIN (services/attest/seal.ts; setup seals to it, pks-unseal.service opens). The
# private half stays with the release signer, like the RAUC and Secure Boot keys.
PKS_PCR_SIGNING_PUB ?= ""
pks_pcr_signing_key() {
    install -d ${IMAGE_ROOTFS}${nonarch_libdir}/pks-image
    if [ -n "${PKS_PCR_SIGNING_PUB}" ]; then
        install -m 0644 ${PKS_PCR_SIGNING_PUB} ${IMAGE_ROOTFS}${nonarch_libdir}/pks-image/pcr-signing.pem
    else
        bbwarn "pks-image: PKS_PCR_SIGNING_PUB not set: setup will refuse to provision (it never leaves the PIN in clear)"
    fi
}

# systemd 253+ measures the machine id (systemd-pcrmachine) and file systems (systemd-pcrfs@)
# into PCR 15, which is ours (pks-measure.service); mask them on this image.
pks_mask_pcr15_users() {
    install -d ${IMAGE_ROOTFS}${sysconfdir}/systemd/system
    ln -sf /dev/null ${IMAGE_ROOTFS}${sysconfdir}/systemd/system/systemd-pcrmachine.service
    ln -sf /dev/null ${IMAGE_ROOTFS}${sysconfdir}/systemd/system/systemd-pcrfs-root.service
    ln -sf /dev/null ${IMAGE_ROOTFS}${sysconfdir}/systemd/system/systemd-pcrfs@.service
}

# Expected PCR 15 (application + default configuration) from the rootfs as built, with the same
# code the box runs at boot (services/attest/expected-cli.ts). The boot-chain PCRs (4, 11) are
# added by the wic step that creates the UKI; PCR 7 depends on the board's Secure Boot keys
# and is recorded per machine.
pks_expected_pcrs() {
    install -d ${IMAGE_ROOTFS}${nonarch_libdir}/pks-image
    ${STAGING_BINDIR_NATIVE}/node ${IMAGE_ROOTFS}${nonarch_libdir}/pks/dist/services/attest/expected-cli.js \
        --rootfs ${IMAGE_ROOTFS} > ${IMAGE_ROOTFS}${nonarch_libdir}/pks-image/expected-pcrs.json || \
        bbwarn "pks-image: expected PCR values not computed"
}
DEPENDS += "nodejs-native"
