#!/bin/sh
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a bounded time on the
# committed seed corpus. Fails on any crash. Usage: tests/fuzz/run.sh [seconds-per-target]
set -eu
root="$(cd "$(dirname "$0")/../.." && pwd)"
seconds="${1:-30}"
out="${SOCKHERD_FUZZ_DIR:-$root/build-fuzz}"
mkdir -p "$out"
cxx="${CLANGXX:-clang++}"
flags="-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I$root"

"$cxx" $flags "$root/tests/fuzz/protocol_decode_fuzz.cpp" "$root/common/ipc/protocol.cpp" -o "$out/protocol_decode_fuzz"

work="$out/corpus-protocol_decode"
rm -rf "$work" && mkdir -p "$work"
cp "$root"/tests/fuzz/corpus/protocol_decode/* "$work"/ 2>/dev/null || true
"$out/protocol_decode_fuzz" -artifact_prefix="$out/" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 "$work"
