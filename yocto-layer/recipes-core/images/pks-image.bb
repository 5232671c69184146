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

# Writable state lives on the data partition at /var/lib/pks (mounted by the wks; /etc/pks bound
# from it by etc-pks.mount), not on the read-only root.
# Order matters: the pinned key is part of the measured pks-app tree, so it is installed before
# the expected PCR 15 (and the measurement manifest made from it) is computed.
ROOTFS_POSTPROCESS_COMMAND += "pks_mask_pcr15_users; pks_pcr_signing_key; pks_expected_pcrs; pks_measurement_manifest;"

# Issue 12: the public half of the image signing key that approves PCR 11 (the UKI) for the
# sealed HSM PIN (services/attest/seal.ts; setup seals to it, pks-unseal.service opens). The
# private half stays with the release signer, like the RAUC and Secure Boot keys.
# The same public key is pinned inside the measured application tree as
# /usr/lib/pks/measurement-signing.pem: the vault verifies a bundle's measurement manifest
# against it before it re-authorises its gate for the new slot (services/vault/vault-gate.ts);
# a changed pin changes PCR 15 and closes the gate, so it cannot be swapped on the disk.
PKS_PCR_SIGNING_PUB ?= ""
pks_pcr_signing_key() {
    install -d ${IMAGE_ROOTFS}${nonarch_libdir}/pks-image
    if [ -n "${PKS_PCR_SIGNING_PUB}" ]; then
        install -m 0644 ${PKS_PCR_SIGNING_PUB} ${IMAGE_ROOTFS}${nonarch_libdir}/pks-image/pcr-signing.pem
        install -m 0644 ${PKS_PCR_SIGNING_PUB} ${IMAGE_ROOTFS}${nonarch_libdir}/pks/measurement-signing.pem
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

# Issue 12 with 13: the signed measurement manifest of this release (PCR 15 and the tree digests
# of expected-pcrs.json, signed with the image signing key), deployed for the RAUC bundle
# (scripts/update/bundle.sh --measurement, pks-measurement.json in the payload). Needs the
# private half: PKS_PCR_SIGNING_KEY is set only on the release signer's build host.
PKS_PCR_SIGNING_KEY ?= ""
pks_measurement_manifest() {
    if [ -z "${PKS_PCR_SIGNING_KEY}" ]; then
        bbwarn "pks-image: PKS_PCR_SIGNING_KEY not set: no measurement manifest, an update to this image will be refused by the vault"
        return 0
    fi
    install -d ${DEPLOY_DIR_IMAGE}
    ${STAGING_BINDIR_NATIVE}/node ${IMAGE_ROOTFS}${nonarch_libdir}/pks/dist/services/attest/measurement-manifest-cli.js \
        --release ${DISTRO_VERSION} --expected ${IMAGE_ROOTFS}${nonarch_libdir}/pks-image/expected-pcrs.json \
        --key ${PKS_PCR_SIGNING_KEY} > ${DEPLOY_DIR_IMAGE}/${IMAGE_NAME}.pks-measurement.json
    ln -sf ${IMAGE_NAME}.pks-measurement.json ${DEPLOY_DIR_IMAGE}/${IMAGE_BASENAME}-${MACHINE}.pks-measurement.json
}

# Issue 12: the signed PCR 11 policy (seal-cli.js sign-policy, as scripts/image/build.sh does):
# one signature by the image signing key per PCR 11 value of the UKI that wic made (the UKI's
# sections, then systemd-pcrphase's words). It cannot live in the verity root (the UKI's command
# line carries the root hash, and the policy is over the UKI: a cycle), so it goes on the ESP
# next to the UKI (a signature: changing it can only make the unseal fail) and pks-unseal reads
# it there (pks-unseal.service.d/yocto-policy.conf from pks-app).
do_pks_pcr11_policy() {
    if [ -z "${PKS_PCR_SIGNING_KEY}" ]; then
        bbwarn "pks-image: PKS_PCR_SIGNING_KEY not set: no signed PCR 11 policy, the sealed PIN will not open"
        return 0
    fi
    uki=$(ls ${DEPLOY_DIR_IMAGE}/*.efi 2>/dev/null | grep -v -e systemd-boot -e linux | head -n1)
    [ -n "$uki" ] || bbfatal "pks-image: no UKI in ${DEPLOY_DIR_IMAGE} for the PCR 11 policy"
    ${STAGING_BINDIR_NATIVE}/node ${IMAGE_ROOTFS}${nonarch_libdir}/pks/dist/services/attest/expected-cli.js \
        --rootfs ${IMAGE_ROOTFS} --uki "$uki" > ${WORKDIR}/expected-pcrs-uki.json
    ${STAGING_BINDIR_NATIVE}/node ${IMAGE_ROOTFS}${nonarch_libdir}/pks/dist/services/attest/seal-cli.js sign-policy \
        --expected ${WORKDIR}/expected-pcrs-uki.json --key ${PKS_PCR_SIGNING_KEY} --out ${DEPLOY_DIR_IMAGE}/pcr11-policy.json
    wic=$(ls -t ${IMGDEPLOYDIR}/${IMAGE_NAME}*.wic 2>/dev/null | head -n1)
    [ -z "$wic" ] || wic cp ${DEPLOY_DIR_IMAGE}/pcr11-policy.json "$wic":1/pks/pcr11-policy.json
}
addtask pks_pcr11_policy after do_image_wic before do_image_complete
