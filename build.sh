#!/usr/bin/env bash
# The one entry point. Each subcommand installs what it needs first (idempotently).
#   ./build.sh            type-check and build into dist/
#   ./build.sh test       run every test; the last line is `N passed, N failed, N skipped`
#   ./build.sh demo       the plant-in-a-box: runs to its end and exits 0 (--keep: leave it running)
#   ./build.sh bench      the benchmarks under test/bench/; the last line is one JSON object
#   ./build.sh image      the bootable dev image of the appliance (QEMU, OVMF, swtpm)
#   ./build.sh vm-test    builds the image, boots it and runs the system tests in it
#   ./build.sh bundle     a signed RAUC update bundle of the current tree (--version V --svn N ...)
#   ./build.sh campaign   kill, fuzz and fault campaign (--minutes M, --only kills,fuzz,faults); last line one JSON object
set -euo pipefail
cd "$(dirname "$0")"
cmd="${1:-build}"
[ $# -gt 0 ] && shift

build() { npm run --silent build; }

case "$cmd" in
  build)
    scripts/deps.sh base
    build
    echo "built into dist/"
    ;;
  test)
    scripts/deps.sh base test update
    npx --no-install tsc -p tsconfig.json --noEmit
    exec node --import tsx test/run.ts "$@"
    ;;
  demo)
    scripts/deps.sh base demo
    exec node --import tsx scripts/demo.ts "$@"
    ;;
  bench)
    scripts/deps.sh base test bench
    exec node --import tsx test/bench/run.ts "$@"
    ;;
  image)
    scripts/deps.sh base image
    build
    exec scripts/image/build.sh "$@"
    ;;
  vm-test)
    scripts/deps.sh base image test update
    build
    exec scripts/vm-test.sh "$@"
    ;;
  bundle)
    scripts/deps.sh base update
    build
    exec scripts/update/bundle.sh "$@"
    ;;
  campaign)
    scripts/deps.sh base test
    build
    # the services from dist/ as on the box (they restart faster than through tsx, so kills add up)
    PKS_FROM_DIST=1 exec node --import tsx test/campaign/run.ts "$@"
    ;;
  -h|--help|help)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  *)
    echo "build.sh: unknown subcommand '$cmd' (try ./build.sh help)" >&2
    exit 2
    ;;
esac
