#!/usr/bin/env bash
# Build every tool in tools/ into tools/target/airlock/NAME.wasm (manifest embedded).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-toolchain.sh
cargo build --quiet -p airlock-host
host="${CARGO_TARGET_DIR:-target}/debug/host"
for dir in tools/*/; do
  [ -f "$dir/tool.toml" ] || continue
  "$host" build "$dir" >/dev/null
done
ls tools/target/airlock/
