// libFuzzer target: the channel decoder must never crash, over-read or loop on any input, and
// whatever it accepts must encode back to the same bytes.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/ipc/protocol.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::span<const std::uint8_t> in(data, size);
    // Decode every frame in the input, as the channel does.
    for (int frames = 0; frames < 1024 && !in.empty(); ++frames) {
        auto r = sockherd::ipc::decode(in);
        if (r.consumed > in.size())
            std::abort();
        if (r.status == sockherd::ipc::decode_status::ok) {
            std::string again;
            sockherd::ipc::encode(r.msg, again);
            if (again.size() != r.consumed ||
                again.compare(0, again.size(), reinterpret_cast<const char*>(in.data()), r.consumed) != 0)
                std::abort(); // decode accepted something encode would not produce
        }
        if (r.status == sockherd::ipc::decode_status::need_more ||
            r.status == sockherd::ipc::decode_status::malformed)
            break;
        in = in.subspan(r.consumed);
    }
    return 0;
}
