#!/bin/sh
# The test command: installs what is missing, builds sockherd with ASan/UBSan and the packages,
# runs every test.
# Run from anywhere; `.ci/run` calls exactly this.
set -eu

root="$(cd "$(dirname "$0")/.." && pwd)"
build="${SOCKHERD_TEST_BUILD_DIR:-$root/build-test}"
pkg_build="${SOCKHERD_PKG_BUILD_DIR:-$root/build-pkg}"
jobs="$(nproc 2>/dev/null || echo 2)"

sh "$root/packaging/deps.sh" --test

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DSOCKHERD_SANITIZE=ON -DSOCKHERD_WERROR=ON -DSOCKHERD_BUILD_BENCH=OFF \
    -DSOCKHERD_PACKAGE_DIR="$pkg_build"
cmake --build "$build" -j "$jobs"

# The .deb and .rpm (a separate Release build), for the packaging.* tests.
SOCKHERD_PKG_BUILD_DIR="$pkg_build" sh "$root/packaging/build.sh"

# Sanitizers: any report fails the test that triggered it.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

cd "$build"
# Unit tests run in parallel; integration tests are RUN_SERIAL (each starts a whole node).
ctest -j "$jobs" --output-on-failure
