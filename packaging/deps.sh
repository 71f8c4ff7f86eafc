#!/bin/sh
# Installs what building sockherd needs on Debian 12 (and, with --test, what its tests need).
# Idempotent: packages already installed are not fetched again. Uses sudo when not root.
set -eu

build_pkgs="g++ cmake make pkg-config libboost1.74-dev libboost-filesystem1.74-dev libspdlog-dev libfmt-dev
libtomlplusplus-dev libcli11-dev nlohmann-json3-dev libsystemd-dev libhiredis-dev libssl-dev"
# packaging/build.sh: rpmbuild for CPack's RPM generator, dpkg-shlibdeps for the .deb's Depends.
package_pkgs="rpm dpkg-dev file gzip"
test_pkgs="libgtest-dev libgmock-dev procps clang libclang-rt-14-dev python3-prometheus-client $package_pkgs lintian
systemd adduser redis-server openssl haproxy nginx-light libnginx-mod-stream"

pkgs="$build_pkgs"
case "${1:-}" in
    --test) pkgs="$pkgs $test_pkgs" ;;
    --package) pkgs="$pkgs $package_pkgs" ;;
esac

missing=""
for p in $pkgs; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    echo "deps.sh: installing:$missing"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
    # The tests start their own HAProxy and nginx on loopback ports; the system services these
    # packages start (nginx on port 80) were not asked for: stop and disable the ones just installed.
    for svc in haproxy nginx-light; do
        case " $missing " in *" $svc "*)
            name=${svc%-light}
            if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
                $SUDO systemctl disable --now "$name" >/dev/null 2>&1 || true
            fi ;;
        esac
    done
fi
