#!/usr/bin/env bash
# The test command: build the tools, then run every test of the host and the tools.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-tools.sh
(cd tools && cargo test --quiet --workspace)
cargo test --workspace
