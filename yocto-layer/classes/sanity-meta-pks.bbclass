# Like meta-rauc's sanity-meta-rauc: the layer is inert without DISTRO_FEATURES "pks"; say so
# once instead of leaving the user to wonder why pks-image is skipped.
# SKIP_META_PKS_FEATURE_CHECK = "1" silences it.
addhandler pks_bbappend_distrocheck
pks_bbappend_distrocheck[eventmask] = "bb.event.SanityCheck"
python pks_bbappend_distrocheck() {
    skip_check = e.data.getVar('SKIP_META_PKS_FEATURE_CHECK') == "1"
    if 'pks' not in e.data.getVar('DISTRO_FEATURES').split() and not skip_check:
        bb.warn("You have included the meta-pks layer, but 'pks' has not been enabled in your "
                "DISTRO_FEATURES. Its appends do nothing and pks-image is skipped. Use the 'pks' "
                "distro (DISTRO = \"pks\") or add 'pks' to DISTRO_FEATURES.")
}
