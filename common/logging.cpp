#include "common/logging.hpp"

#include <iterator>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace sockherd {
namespace {

spdlog::level::level_enum to_spdlog(log_level l) {
    switch (l) {
    case log_level::trace: return spdlog::level::trace;
    case log_level::debug: return spdlog::level::debug;
    case log_level::info: return spdlog::level::info;
    case log_level::warn: return spdlog::level::warn;
    case log_level::error: return spdlog::level::err;
    }
    return spdlog::level::info;
}

// Escapes the message for the JSON format (the message is the only free text in a line).
class json_message_flag : public spdlog::custom_flag_formatter {
public:
    void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
        for (char c : msg.payload) {
            switch (c) {
            case '"': dest.append(std::string_view("\\\"")); break;
            case '\\': dest.append(std::string_view("\\\\")); break;
            case '\n': dest.append(std::string_view("\\n")); break;
            case '\r': dest.append(std::string_view("\\r")); break;
            case '\t': dest.append(std::string_view("\\t")); break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned char>(c));
                    dest.append(std::string_view(buf));
                } else {
                    dest.push_back(c);
                }
            }
        }
    }
    std::unique_ptr<custom_flag_formatter> clone() const override {
        return std::make_unique<json_message_flag>();
    }
};

// The level as the config names it (spdlog says "warning" and "critical" for two of them).
class level_flag : public spdlog::custom_flag_formatter {
public:
    void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
        static constexpr std::string_view names[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
        const auto i = static_cast<std::size_t>(msg.level);
        const std::string_view name = i < std::size(names) ? names[i] : "?";
        dest.append(name.data(), name.data() + name.size());
    }
    std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<level_flag>(); }
};

} // namespace

void init_logging(const std::string& process_name, log_format format) {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto logger = std::make_shared<spdlog::logger>(process_name, sink);
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    if (format == log_format::json) {
        formatter->add_flag<json_message_flag>('*').add_flag<level_flag>('L').set_pattern(
            R"({"time":"%Y-%m-%dT%H:%M:%S.%e%z","process":"%n","pid":%P,"level":"%L","msg":"%*"})");
    } else {
        formatter->add_flag<level_flag>('L').set_pattern("%Y-%m-%d %H:%M:%S.%e [%n] %^%L%$: %v");
    }
    logger->set_formatter(std::move(formatter));
    const auto level = spdlog::default_logger() ? spdlog::default_logger()->level() : spdlog::level::info;
    logger->set_level(level);
    logger->flush_on(spdlog::level::trace);
    spdlog::set_default_logger(std::move(logger));
}

void apply_log_config(const std::string& process_name, const config& cfg) {
    init_logging(process_name, cfg.log.format);
    spdlog::set_level(to_spdlog(cfg.log.level));
}

} // namespace sockherd
