#!/bin/sh
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a bounded time on the
# committed seed corpus. Fails on any crash. Usage: tests/fuzz/run.sh [seconds-per-target]
# CLANGXX, CMAKE and AR name the tools (the cmake generates the embedded default config).
set -eu
root="$(cd "$(dirname "$0")/../.." && pwd)"
seconds="${1:-30}"
out="${SOCKHERD_FUZZ_DIR:-$root/build-fuzz}"
mkdir -p "$out"
cxx="${CLANGXX:-clang++}"
flags="-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I$root"

"$cxx" $flags "$root/tests/fuzz/protocol_decode_fuzz.cpp" "$root/common/ipc/protocol.cpp" -o "$out/protocol_decode_fuzz"
"$cxx" $flags "$root/tests/fuzz/json_ops_fuzz.cpp" "$root/worker/json_ops.cpp" -o "$out/json_ops_fuzz"
"$cxx" $flags "$root/tests/fuzz/proxy_protocol_fuzz.cpp" "$root/common/proxy_protocol.cpp" -o "$out/proxy_protocol_fuzz"
"$cxx" $flags "$root/tests/fuzz/ws_frame_fuzz.cpp" "$root/common/ws_frame.cpp" -o "$out/ws_frame_fuzz"
# The config loader takes what it uses from an archive of the common sources (logging.cpp aside: it
# needs spdlog), so the linker pulls only the objects config.cpp reaches, as from sockherd_common.
# It starts from the embedded etc/default.toml, whose source is generated as the build does.
rm -rf "$out/common" && mkdir -p "$out/common"
"${CMAKE:-cmake}" -DOUTPUT="$out/common/embedded_assets.cpp" -DNAMESPACE=sockherd::assets -DBASE="$root/etc" \
    -DFILES="$root/etc/default.toml" -P "$root/common/embed_generate.cmake"
for source in "$root"/common/*.cpp "$out/common/embedded_assets.cpp"; do
    name="${source##*/}"
    case "$name" in
    logging.cpp) ;;
    *) "$cxx" $flags -c "$source" -o "$out/common/${name%.cpp}.o" ;;
    esac
done
"${AR:-ar}" rcs "$out/common/libcommon.a" "$out"/common/*.o
"$cxx" $flags "$root/tests/fuzz/config_fuzz.cpp" "$out/common/libcommon.a" -lfmt -o "$out/config_fuzz"

for target in protocol_decode json_ops proxy_protocol config ws_frame; do
    work="$out/corpus-$target"
    rm -rf "$work" && mkdir -p "$work"
    cp "$root"/tests/fuzz/corpus/$target/* "$work"/ 2>/dev/null || true
    echo "fuzz: $target for ${seconds}s"
    "$out/${target}_fuzz" -artifact_prefix="$out/$target-" -max_total_time="$seconds" -timeout=5 \
        -rss_limit_mb=2048 -print_final_stats=1 "$work"
done
