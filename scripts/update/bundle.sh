#!/usr/bin/env bash
# Builds a signed RAUC bundle of the appliance.
#   scripts/update/bundle.sh [--version V] [--svn N] [--format verity|plain] [--compatible C]
#       [--keys DIR] [--signer NAME] [--rootfs IMG] [--uki-a EFI --uki-b EFI] [--out FILE]
#       [--measurement MANIFEST.json | --measure-key IMAGE_SIGNING_KEY.pem]
# Payload: one image, `rootfs.ext4`, written raw into the inactive root slot. By default it is an
# ext4 image (mkfs.ext4 -d, no loop device) of the application layer of the current tree:
# dist/ (run `npm run build` first; ./build.sh bundle does), bin/, package.json, README.md under
# /usr/lib/pks, rootfs-overlay/ at /, and /usr/lib/pks-release (VERSION, SVN). The dev image
# passes --rootfs with its whole root file system and --uki-a/--uki-b with the two per-slot
# UKIs (each carries its own root=PARTUUID), which the post-install handler puts on the ESP.
# The version floor: SVN=N (security version) in the bundle's file pks-release (and [meta.pks] svn), checked by the pre-install handler
# against the TPM NV counter, raised after mark-good (README "Updates").
# The new slot's application measurement (issue 12): --measurement puts a signed measurement
# manifest (services/attest/measurement-manifest-cli.ts, made by the image build over the staged
# rootfs with the image signing key) into the payload as pks-measurement.json; the running slot's
# vault authorises the new slot from it (gate-authorise). For the default application-layer tree,
# --measure-key pins that key's public half in the tree (/usr/lib/pks/measurement-signing.pem)
# and makes the manifest over the tree here. A bundle without one is refused by a box with a gate.
# Format: verity is the product setting (system.conf bundle-formats=-plain); installing it needs
# device-mapper, which only the VM has, so host install tests build --format plain.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
version=$(node -p "require('$repo/package.json').version")
svn=1 format=verity compatible=pks-appliance keys=$repo/.cache/update-keys signer=signer rootfs= uki_a= uki_b= out= measurement= measure_key=
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version=$2; shift 2 ;;
    --svn) svn=$2; shift 2 ;;
    --format) format=$2; shift 2 ;;
    --compatible) compatible=$2; shift 2 ;;
    --keys) keys=$2; shift 2 ;;
    --signer) signer=$2; shift 2 ;;
    --rootfs) rootfs=$2; shift 2 ;;
    --uki-a) uki_a=$2; shift 2 ;;
    --uki-b) uki_b=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --measurement) measurement=$2; shift 2 ;;
    --measure-key) measure_key=$2; shift 2 ;;
    *) echo "bundle.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "bundle.sh: --version must be MAJOR.MINOR.PATCH" >&2; exit 2; }
[[ "$svn" =~ ^[1-9][0-9]{0,5}$ ]] || { echo "bundle.sh: --svn must be an integer 1..999999" >&2; exit 2; }
[[ "$format" =~ ^(verity|plain)$ ]] || { echo "bundle.sh: --format verity|plain" >&2; exit 2; }
[ -n "$out" ] || out=$repo/.cache/bundles/pks-$version.raucb
for t in rauc mksquashfs mkfs.ext4; do command -v $t >/dev/null || { echo "bundle.sh: $t missing (scripts/deps.sh update)" >&2; exit 1; }; done
[ -f "$keys/$signer.pem" ] || "$repo/scripts/update/keys.sh" --dir "$keys" init

work=$(mktemp -d "${TMPDIR:-/tmp}/pks-bundle.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/content"
if [ -z "$rootfs" ]; then
  [ -d "$repo/dist" ] || { echo "bundle.sh: no dist/ (npm run build)" >&2; exit 1; }
  tree=$work/tree
  mkdir -p "$tree/usr/lib/pks"
  cp -a "$repo/dist" "$repo/bin" "$repo/package.json" "$repo/README.md" "$tree/usr/lib/pks/"
  cp -a "$repo/rootfs-overlay/." "$tree/"
  printf 'VERSION=%s\nSVN=%s\nCOMPATIBLE=%s\n' "$version" "$svn" "$compatible" > "$tree/usr/lib/pks-release"
  if [ -n "$measure_key" ]; then
    openssl pkey -in "$measure_key" -pubout -out "$tree/usr/lib/pks/measurement-signing.pem"
    chmod 0644 "$tree/usr/lib/pks/measurement-signing.pem"
    (cd "$repo" && node --import tsx services/attest/measurement-manifest-cli.ts --release "$version" --compatible "$compatible" --key "$measure_key" --rootfs "$tree") > "$work/content/pks-measurement.json"
  fi
  kib=$(du -sk "$tree" | cut -f1)
  mkfs.ext4 -q -F -L pks-root -E root_owner=0:0 -d "$tree" "$work/content/rootfs.ext4" $((kib * 13 / 10 + 8192))K >/dev/null
else
  cp --sparse=always "$rootfs" "$work/content/rootfs.ext4"
fi
[ -z "$measurement" ] || cp "$measurement" "$work/content/pks-measurement.json"
if [ -n "$uki_a" ] || [ -n "$uki_b" ]; then
  cp "$uki_a" "$work/content/uki-A.efi"
  cp "$uki_b" "$work/content/uki-B.efi"
fi
build=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
# RAUC 1.8 re-writes the manifest with only the keys it knows (no [meta.*]), so the svn travels
# as a file of the signed payload; [meta.pks] stays for RAUC >= 1.9
printf 'VERSION=%s\nSVN=%s\nCOMPATIBLE=%s\nBUILD=%s\n' "$version" "$svn" "$compatible" "$build" > "$work/content/pks-release"
cat > "$work/content/manifest.raucm" <<MF
[update]
compatible=$compatible
version=$version
build=$build

[bundle]
format=$format

[meta.pks]
svn=$svn

[image.rootfs]
filename=rootfs.ext4
MF
mkdir -p "$(dirname "$out")"
rm -f "$out"
# zstd: RAUC's default (gzip) took minutes per full-system bundle on the 2-core build host and
# decompresses slowly on the box; zstd level 6 is seconds here, about as small, and the
# appliance kernel's squashfs reads it (CONFIG_SQUASHFS_ZSTD)
squashfs_args=${PKS_BUNDLE_SQUASHFS_ARGS:--comp zstd -Xcompression-level 6}
printf '[system]\ncompatible=%s\nbootloader=noop\n[keyring]\npath=%s\ncheck-purpose=codesign\n' "$compatible" "$keys/ca.pem" > "$work/sign.conf"
rauc -c "$work/sign.conf" bundle --mksquashfs-args="$squashfs_args" --cert "$keys/$signer.pem" --key "$keys/$signer.key" --keyring "$keys/ca.pem" "$work/content" "$out" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
echo "$out"
