SUMMARY = "PKS appliance: services, pksctl and the root file system overlay"
DESCRIPTION = "Installs the compiled TypeScript (dist/), the production node_modules and \
package.json at /usr/lib/pks, and rootfs-overlay/ (systemd units, presets, sysusers, tmpfiles, \
nftables, sysctl) over the root file system."
LICENSE = "CLOSED"

# Our sources: the repository this layer lives in, or PKS_SRC_URI (a release tarball or git).
PKS_SRC_URI ??= "file://${PKS_TOPDIR}/;subdir=pks"
SRC_URI = "${PKS_SRC_URI}"
S = "${WORKDIR}/pks"

# npm dependencies come from package-lock.json through the npmsw fetcher (do_fetch is the only
# task with network). Native modules (lmdb, pkcs11js, msgpackr-extract) are rebuilt for the
# target by the npm class with node-gyp. dev=1 for typescript, pruned again in do_install.
SRC_URI += "npmsw://${PKS_TOPDIR}/package-lock.json;dev=1"
# issue 12: pks-unseal reads the signed PCR 11 policy from the ESP on this image (see the file)
SRC_URI += "file://pks-unseal-yocto-policy.conf file://etc-pks.mount file://pks-data-init.service"

inherit features_check npm systemd
REQUIRED_DISTRO_FEATURES = "pks systemd"

DEPENDS += "nodejs-native"
RDEPENDS:${PN} += "nodejs tpm2-tools libtss2-tcti-device bash rauc squashfs-tools"

NPM_INSTALL_DEV = "1"

do_compile:append() {
    cd ${S}
    # same as ./build.sh: one tsconfig, output in dist/
    ${STAGING_BINDIR_NATIVE}/node ${S}/node_modules/typescript/bin/tsc -p tsconfig.json
}

do_install() {
    install -d ${D}${nonarch_libdir}/pks
    cp -R --no-preserve=ownership ${S}/dist ${D}${nonarch_libdir}/pks/
    rm -rf ${D}${nonarch_libdir}/pks/dist/test
    install -m 0644 ${S}/package.json ${D}${nonarch_libdir}/pks/
    cp -R --no-preserve=ownership ${S}/node_modules ${D}${nonarch_libdir}/pks/
    cd ${D}${nonarch_libdir}/pks && ${STAGING_BINDIR_NATIVE}/npm prune --omit=dev --offline --no-audit --no-fund
    rm -f ${D}${nonarch_libdir}/pks/node_modules/.package-lock.json

    # rootfs-overlay/: units, presets, sysusers.d, tmpfiles.d, nftables, sysctl, default config.
    # pks-image (expected-pcrs.json) is written by the image recipe, not here.
    cp -R --no-preserve=ownership ${S}/rootfs-overlay/. ${D}/
    # plant IT's first-boot setup: its unit where systemd finds it, and the two helpers it
    # shares with the dev machine (same as scripts/image/build.sh does for the dev image)
    install -m 0755 ${S}/scripts/pki.sh ${S}/scripts/softhsm-token.sh ${D}${nonarch_libdir}/pks-setup/
    install -m 0644 ${D}${nonarch_libdir}/pks-setup/pks-setup.service ${D}${systemd_system_unitdir}/pks-setup.service
    install -d ${D}${systemd_system_unitdir}/pks-unseal.service.d
    install -m 0644 ${WORKDIR}/pks-unseal-yocto-policy.conf ${D}${systemd_system_unitdir}/pks-unseal.service.d/yocto-policy.conf
    # /etc/pks from the data partition (/var/lib/pks, the wks): it outlives every update
    install -m 0644 ${WORKDIR}/etc-pks.mount ${WORKDIR}/pks-data-init.service ${D}${systemd_system_unitdir}/
    chmod -R go-w ${D}

    install -d ${D}${bindir}
    printf '#!/bin/sh\nexec /usr/bin/node /usr/lib/pks/dist/appliance/pksctl/main.js "$@"\n' > ${D}${bindir}/pksctl
    chmod 0755 ${D}${bindir}/pksctl
}

SYSTEMD_SERVICE:${PN} = "etc-pks.mount pks.target pks-setup.service pks-measure.service pks-measure-live.timer pks-unseal.service pks-vault.service pks-keystore.service \
    pks-tester-api.service pks-uplink.service pks-sentinel.service pks-unlock.service pks-updater.service pks-update-reboot.path pks-quote.socket"
SYSTEMD_AUTO_ENABLE = "enable"

FILES:${PN} += "${nonarch_libdir}/pks ${nonarch_libdir}/pks-image ${nonarch_libdir}/pks-setup ${nonarch_libdir}/pks-update ${datadir}/dbus-1 ${systemd_system_unitdir} \
    ${nonarch_libdir}/systemd ${nonarch_libdir}/sysusers.d ${nonarch_libdir}/tmpfiles.d \
    ${nonarch_libdir}/sysctl.d ${sysconfdir}"
# prebuilt .node files of other architectures that npm packages ship are not ours to fix
INSANE_SKIP:${PN} += "already-stripped arch file-rdeps"
