// sockherd's entry point: parses the command line and dispatches. Nothing else lives here.

#include <unistd.h>

#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "common/config.hpp"
#include "common/fd_limit.hpp"
#include "common/logging.hpp"
#include "common/tls.hpp"
#include "supervisor/control.hpp"
#include "supervisor/supervisor.hpp"
#include "supervisor/worker_identity.hpp"
#include "worker/worker.hpp"

namespace {

using namespace sockherd;

int run_supervisor(const std::string& config_path) {
    init_logging("supervisor");
    config cfg;
    if (config_path.empty()) {
        cfg = default_config();
    } else {
        auto result = load_config_file(config_path);
        if (auto* err = std::get_if<config_error>(&result)) {
            std::fprintf(stderr, "sockherd: %s\n", err->to_string().c_str());
            return 1;
        }
        cfg = std::get<config>(std::move(result));
    }
    if (const auto err = load_tls(cfg)) {
        std::fprintf(stderr, "sockherd: %s\n", err->to_string().c_str());
        return 1;
    }
    apply_log_config("supervisor", cfg);
    raise_fd_limit();
    ::signal(SIGPIPE, SIG_IGN);
    net::io_context ioc(1);
    supervisor::supervisor sup(ioc, std::move(cfg));
    return sup.run();
}

int check_config(const std::string& path) {
    auto result = load_config_file(path);
    if (auto* err = std::get_if<config_error>(&result)) {
        std::fprintf(stderr, "%s\n", err->to_string().c_str());
        return 1;
    }
    auto& cfg = std::get<config>(result);
    if (const auto err = load_tls(cfg)) {
        std::fprintf(stderr, "%s\n", err->to_string().c_str());
        return 1;
    }
    if (const auto err = supervisor::check_worker_user(cfg, ::geteuid())) {
        std::fprintf(stderr, "%s\n", err->to_string().c_str());
        return 1;
    }
    std::printf("%s: ok (%u worker(s), %zu listener(s), %zu route(s))\n", path.c_str(), cfg.server.workers,
                cfg.listeners.size(), cfg.routes.size());
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"sockherd: one binary that runs a whole WebSocket node (a supervisor and its workers)",
                 "sockherd"};
    app.set_version_flag("--version", std::string("sockherd ") + SOCKHERD_VERSION);
    app.require_subcommand(1);

    std::string config_path;
    auto* run = app.add_subcommand("run", "Run the node in the foreground (no --config: embedded defaults)");
    run->add_option("--config,-c", config_path, "TOML configuration file")->check(CLI::ExistingFile);

    std::string check_path;
    auto* check = app.add_subcommand("check-config", "Validate a configuration file; print the first problem");
    check->add_option("file", check_path, "TOML configuration file")->required();

    int channel_fd = -1;
    unsigned slot = 0;
    auto* worker = app.add_subcommand("worker", "Internal: how the supervisor starts a worker");
    worker->add_option("--channel-fd", channel_fd, "Inherited channel descriptor")->required();
    worker->add_option("--slot", slot, "Worker slot")->required();
    worker->group(""); // hidden from --help

    // Commands for a running node, over its control socket (supervisor/control.hpp).
    std::string control_socket = "/run/sockherd/control.sock";
    const auto add_socket_option = [&](CLI::App* cmd) {
        cmd->add_option("--socket", control_socket, "The supervisor's control socket")
            ->envname("SOCKHERD_CONTROL_SOCKET")
            ->capture_default_str();
    };
    bool status_json = false;
    auto* status = app.add_subcommand("status", "Show the running node's workers, connections and counters");
    status->add_flag("--json", status_json, "Print status.json instead of a table");
    add_socket_option(status);
    auto* stop = app.add_subcommand("stop", "Stop the running node gracefully: drain connections, then exit");
    add_socket_option(stop);
    auto* reload = app.add_subcommand("reload", "Make the running node re-read its configuration file");
    add_socket_option(reload);
    unsigned worker_count = 0;
    auto* workers = app.add_subcommand("workers", "Scale the running node to N worker processes");
    workers->add_option("N", worker_count, "Number of workers")->required()->check(CLI::Range(1u, max_workers));
    add_socket_option(workers);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }

    try {
        if (*run)
            return run_supervisor(config_path);
        if (*check)
            return check_config(check_path);
        if (*worker) {
            raise_fd_limit();
            return worker::run_worker(channel_fd, slot);
        }
        const auto control = [&](std::vector<std::string> words) {
            return supervisor::run_control_command(control_socket, words, std::cout, std::cerr);
        };
        if (*status && status_json)
            return control({"status", "json"});
        if (*status)
            return control({"status"});
        if (*stop)
            return control({"stop"});
        if (*reload)
            return control({"reload"});
        if (*workers)
            return control({"workers", std::to_string(worker_count)});
    } catch (const std::exception& e) {
        std::fprintf(stderr, "sockherd: %s\n", e.what());
        return 1;
    }
    return 2;
}
