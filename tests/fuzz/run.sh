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
"$cxx" $flags "$root/tests/fuzz/json_ops_fuzz.cpp" "$root/worker/json_ops.cpp" -o "$out/json_ops_fuzz"

for target in protocol_decode json_ops; do
    work="$out/corpus-$target"
    rm -rf "$work" && mkdir -p "$work"
    cp "$root"/tests/fuzz/corpus/$target/* "$work"/ 2>/dev/null || true
    echo "fuzz: $target for ${seconds}s"
    "$out/${target}_fuzz" -artifact_prefix="$out/$target-" -max_total_time="$seconds" -timeout=5 \
        -rss_limit_mb=2048 -print_final_stats=1 "$work"
done
