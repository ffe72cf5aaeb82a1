#!/usr/bin/env bash
# Build every tool in tools/ into tools/target/airlock/NAME.wasm (manifest embedded);
# the test fixtures that attack the sandbox go to tools/target/airlock-fixtures/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-toolchain.sh
# The workspace's binaries at once: one set of dependency features for every
# script (quickstart, tests, stack), so nothing is compiled twice.
cargo build --quiet --workspace --bins
host="${CARGO_TARGET_DIR:-target}/debug/host"
# Python tools: componentize-py from PyPI, pinned, in its own venv.
if [ ! -x tools/.venv/bin/componentize-py ]; then
  python3 -m venv tools/.venv
  tools/.venv/bin/pip install --quiet --disable-pip-version-check componentize-py==0.25.1
fi
export COMPONENTIZE_PY="$PWD/tools/.venv/bin/componentize-py"
# JavaScript tools: componentize-js from npm, pinned in tools/package-lock.json
# (skipped where npm is missing: scripts/setup-test-peers.sh installs it).
js=yes
if ! command -v npm >/dev/null; then
  js=""
  echo "npm is missing: the JavaScript tools are not built" >&2
elif [ ! -x tools/node_modules/.bin/componentize-js ]; then
  (cd tools && npm ci --no-audit --no-fund --loglevel=error)
fi
export COMPONENTIZE_JS="$PWD/tools/node_modules/.bin/componentize-js"
export AIRLOCK_TOOLS_TARGET_DIR="$PWD/tools/target"
mkdir -p tools/target/airlock-fixtures
for dir in tools/*/; do
  [ -f "$dir/tool.toml" ] || continue
  name=$(basename "$dir")
  if [ -z "$js" ] && grep -q COMPONENTIZE_JS "$dir/tool.toml"; then continue; fi
  case "$name" in
    hostile*) "$host" build "$dir" --out "tools/target/airlock-fixtures/$name.wasm" >/dev/null ;;
    *) "$host" build "$dir" >/dev/null ;;
  esac
done
rm -f tools/target/airlock/hostile*.wasm
ls tools/target/airlock/ tools/target/airlock-fixtures/
