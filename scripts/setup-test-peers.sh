#!/usr/bin/env bash
# Install the real third-party peers the tests run on 127.0.0.1: node (from
# Debian when missing) and oidc-provider (npm, version pinned in tests/oidc).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d tests/oidc/node_modules/oidc-provider ]; then
  (cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error)
fi
