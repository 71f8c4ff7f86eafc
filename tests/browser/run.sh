#!/bin/sh
# Browser tests (the demo chat page, the admin status page): installs what is missing (Debian's
# chromium, the npm packages from package-lock.json), then runs the given test files (default:
# all of them) with node's test runner.
#
#   SOCKHERD_BINARY=/path/to/sockherd sh tests/browser/run.sh [chat.test.mjs] [status.test.mjs]
#
# Env: SOCKHERD_BINARY (required; a sockherd built after the last edit of etc/www/index.html),
#      SOCKHERD_ARTIFACTS_DIR (screenshots and logs; default: the system temp dir).
# Exit code: the test's.
set -eu

here="$(cd "$(dirname "$0")" && pwd)"

if [ -z "${SOCKHERD_BINARY:-}" ]; then
    echo "run.sh: SOCKHERD_BINARY is not set: point it at the sockherd binary to test" >&2
    exit 2
fi
case "$SOCKHERD_BINARY" in
    /*) ;;
    *) SOCKHERD_BINARY="$(pwd)/$SOCKHERD_BINARY" ;;
esac
export SOCKHERD_BINARY
case "${SOCKHERD_ARTIFACTS_DIR:-}" in
    ''|/*) ;;
    *) SOCKHERD_ARTIFACTS_DIR="$(pwd)/$SOCKHERD_ARTIFACTS_DIR"; export SOCKHERD_ARTIFACTS_DIR ;;
esac

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x /usr/bin/chromium ]; then
    echo "run.sh: installing chromium (Debian package)" >&2
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "run.sh: installing nodejs and npm (Debian packages)" >&2
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
    echo "run.sh: node $(node --version) is too old: playwright-core 1.49 needs node >= 18" >&2
    exit 2
fi

cd "$here"
if [ ! -f node_modules/playwright-core/package.json ]; then
    # playwright-core downloads no browser; the test drives /usr/bin/chromium.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
fi

if [ "$#" -eq 0 ]; then
    set -- chat.test.mjs status.test.mjs
fi
for t in "$@"; do
    if [ ! -f "$t" ]; then
        echo "run.sh: no test file $here/$t" >&2
        exit 2
    fi
done
exec node --test "$@"
