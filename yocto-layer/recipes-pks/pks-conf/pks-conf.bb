SUMMARY = "PKS appliance site configuration and trust anchors"
DESCRIPTION = "Per-plant settings with ??= defaults. Like meta-rauc's rauc-conf, a build with \
the placeholder values works but warns: set them in local.conf or the distro/machine config."
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COREBASE}/meta/COPYING.MIT;md5=3da9cfbcb788c80a0384361b4de20420"

inherit features_check
REQUIRED_DISTRO_FEATURES = "pks"

# Defaults that are placeholders on purpose; every one of them must be overridden for a plant.
PKS_PLANT_ID ??= "PLANT-PLACEHOLDER"
PKS_KMS_BROKER_URL ??= "mqtts://kms.example.invalid:8883"
PKS_TESTER_PORT ??= "8443"
# CA that signs the KMS broker's certificate and the RAUC bundles' keyring
PKS_KMS_CA_FILE ??= "kms-ca.placeholder.pem"
# Ops mail relay for sentinel alerts
PKS_ALERT_SMTP ??= "smtp://mail.example.invalid:25"

SRC_URI = "file://site.json.in file://${PKS_KMS_CA_FILE}"
S = "${WORKDIR}"

python do_check_placeholders() {
    for var in ('PKS_PLANT_ID', 'PKS_KMS_BROKER_URL', 'PKS_KMS_CA_FILE', 'PKS_ALERT_SMTP'):
        val = d.getVar(var) or ''
        if 'PLACEHOLDER' in val.upper() or 'example.invalid' in val:
            bb.warn("pks-conf: %s is still the placeholder '%s'; set it for this plant in local.conf" % (var, val))
}
addtask check_placeholders before do_install after do_configure

do_install() {
    install -d ${D}${sysconfdir}/pks
    sed -e 's|@PLANT_ID@|${PKS_PLANT_ID}|' \
        -e 's|@KMS_BROKER_URL@|${PKS_KMS_BROKER_URL}|' \
        -e 's|@TESTER_PORT@|${PKS_TESTER_PORT}|' \
        -e 's|@ALERT_SMTP@|${PKS_ALERT_SMTP}|' \
        ${WORKDIR}/site.json.in > ${D}${sysconfdir}/pks/site.json
    chmod 0644 ${D}${sysconfdir}/pks/site.json
    # a CA file with nothing but comments is the shipped placeholder
    if ! grep -q '^-----BEGIN CERTIFICATE-----' ${WORKDIR}/${PKS_KMS_CA_FILE}; then
        bbwarn "pks-conf: ${PKS_KMS_CA_FILE} holds no certificate; provide the plant's KMS CA"
    fi
    install -m 0644 ${WORKDIR}/${PKS_KMS_CA_FILE} ${D}${sysconfdir}/pks/kms-ca.pem
}

FILES:${PN} = "${sysconfdir}/pks"
