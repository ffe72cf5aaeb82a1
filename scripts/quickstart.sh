#!/usr/bin/env bash
# Set up a fresh machine and run one tool call on the embedded defaults
# (no operator policy file, default limits): the pure example tool.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-toolchain.sh
default='{"text": "Airlock runs each tool with only what it declared.", "top": 3}'
# The workspace's binaries at once (the tests and scripts/stack.sh build the
# same set, so nothing is compiled twice), then one call.
cargo build --quiet --workspace --bins
"${CARGO_TARGET_DIR:-target}/debug/host" run tools/text-stats --input "${1:-$default}"
