#!/bin/sh
# Builds the packages: sockherd_<version>_<arch>.deb and sockherd-<version>-1.<arch>.rpm in
# build-pkg/ (or $SOCKHERD_PKG_BUILD_DIR). A Release build linked for every distribution the
# packages target: spdlog, fmt and Boost compiled in, so the binary needs only libc, libm,
# libstdc++, libgcc_s and libsystemd, at versions RHEL 9 has (see SOCKHERD_PORTABLE in CMakeLists.txt).
set -eu

root="$(cd "$(dirname "$0")/.." && pwd)"
build="${SOCKHERD_PKG_BUILD_DIR:-$root/build-pkg}"
jobs="$(nproc 2>/dev/null || echo 2)"

sh "$root/packaging/deps.sh" --package

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DSOCKHERD_PORTABLE=ON \
    -DSOCKHERD_BUILD_TESTS=OFF -DSOCKHERD_BUILD_BENCH=OFF
cmake --build "$build" -j "$jobs" --target package
ls -1 "$build"/sockherd_*.deb "$build"/sockherd-*.rpm
