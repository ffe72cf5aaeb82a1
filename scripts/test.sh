#!/usr/bin/env bash
# The test command: build the tools, then run every test of the tools and the host.
set -euo pipefail
cd "$(dirname "$0")/.."
# The test peers first (node, npm, Chromium, oidc-provider, the MCP clients):
# the JavaScript tools are built with npm's componentize-js.
scripts/setup-test-peers.sh
scripts/build-tools.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
(cd tools && cargo test --workspace) 2>&1 | tee -a "$log"
cargo test --workspace 2>&1 | tee -a "$log"
# One closing line over both workspaces.
awk '/^test result:/ { p += $4; f += $6 } END { printf "all tests: %d passed, %d failed\n", p, f; exit (f > 0) }' "$log"
