#!/usr/bin/env bash
# `make browser-deps`: installs what the browser tests (tests/test_book_browser.py, test_pipeline.py)
# need, only where it is missing (fast when present): Debian's chromium, node and npm (apt), and
# playwright-core at the version package-lock.json pins.
# Exit code 75 means a package registry could not be reached.
set -euo pipefail
cd "$(dirname "$0")"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

apt_install() {  # apt_install PACKAGE...: install, refreshing the package lists once if needed
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get install -y -q "$@" >/dev/null; then
        as_root apt-get update -q >/dev/null || { echo "setup.sh: apt-get update failed (no network?)" >&2; exit 75; }
        as_root apt-get install -y -q "$@" >/dev/null
    fi
}

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]} with apt-get" >&2
    apt_install "${missing[@]}"
fi

pinned=$(node -p 'require("./package-lock.json").packages["node_modules/playwright-core"].version')
installed=$(node -p 'try { require("./node_modules/playwright-core/package.json").version } catch { "" }')
if [ "$pinned" != "$installed" ]; then
    echo "setup.sh: npm ci (playwright-core $pinned)" >&2
    npm ci --no-audit --no-fund --loglevel=error >/dev/null || {
        npm ping >/dev/null 2>&1 || { echo "setup.sh: the npm registry cannot be reached" >&2; exit 75; }
        exit 1
    }
fi
