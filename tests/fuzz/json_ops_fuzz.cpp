// libFuzzer target: the JSON pub/sub op parser must never crash or exhaust the stack, and every
// reply it leads to (error, delivery) must itself be valid JSON.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include "worker/json_ops.hpp"

using namespace sockherd;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    auto parsed = worker::json_ops::parse(text);
    std::string out;
    if (auto* err = std::get_if<worker::json_ops::op_error>(&parsed)) {
        out = worker::json_ops::encode_error(*err);
    } else {
        auto& op = std::get<worker::json_ops::op>(parsed);
        if (!valid_channel_name(op.channel))
            std::abort(); // the parser let a bad channel name through
        out = worker::json_ops::encode_delivery(pubsub_message{op.channel, op.data_kind, op.data});
    }
    if (!nlohmann::json::accept(out))
        std::abort(); // a reply that is not JSON
    // Raw bytes as a text delivery must also come out as valid JSON (U+FFFD for bad UTF-8).
    if (!nlohmann::json::accept(worker::json_ops::encode_delivery(pubsub_message{"c", payload_kind::text, std::string(text)})))
        std::abort();
    return 0;
}
