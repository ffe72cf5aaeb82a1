#!/usr/bin/env bash
# Install the real third-party peers the tests run on 127.0.0.1: node (from
# Debian when missing), oidc-provider (npm, pinned in tests/oidc), the
# official MCP client SDKs (PyPI `mcp` and npm `@modelcontextprotocol/sdk`,
# pinned in tests/mcp), and headless Chromium with its WebDriver (Debian's
# `chromium` and `chromium-driver`) for the pages people see.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
missing=()
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -d tests/oidc/node_modules/oidc-provider ]; then
  (cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ ! -d tests/mcp/node_modules/@modelcontextprotocol/sdk ]; then
  (cd tests/mcp && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ ! -x tests/mcp/.venv/bin/python ] || ! tests/mcp/.venv/bin/python -c 'import mcp' 2>/dev/null; then
  python3 -m venv tests/mcp/.venv
  tests/mcp/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/mcp/requirements.txt
fi
if [ ! -x tests/s3/.venv/bin/moto_server ]; then
  python3 -m venv tests/s3/.venv
  tests/s3/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/s3/requirements.txt
fi
if [ ! -x deploy/.venv/bin/cfn-lint ]; then
  python3 -m venv deploy/.venv
  deploy/.venv/bin/pip install --quiet --disable-pip-version-check -r deploy/requirements.txt
fi
