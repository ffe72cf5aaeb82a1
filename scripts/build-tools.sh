#!/usr/bin/env bash
# Build every tool in tools/ into tools/target/airlock/NAME.wasm (manifest embedded);
# the test fixtures that attack the sandbox go to tools/target/airlock-fixtures/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-toolchain.sh
cargo build --quiet -p airlock-host
host="${CARGO_TARGET_DIR:-target}/debug/host"
# Python tools: componentize-py from PyPI, pinned, in its own venv.
if [ ! -x tools/.venv/bin/componentize-py ]; then
  python3 -m venv tools/.venv
  tools/.venv/bin/pip install --quiet --disable-pip-version-check componentize-py==0.25.1
fi
export COMPONENTIZE_PY="$PWD/tools/.venv/bin/componentize-py"
export AIRLOCK_TOOLS_TARGET_DIR="$PWD/tools/target"
mkdir -p tools/target/airlock-fixtures
for dir in tools/*/; do
  [ -f "$dir/tool.toml" ] || continue
  name=$(basename "$dir")
  case "$name" in
    hostile*) "$host" build "$dir" --out "tools/target/airlock-fixtures/$name.wasm" >/dev/null ;;
    *) "$host" build "$dir" >/dev/null ;;
  esac
done
rm -f tools/target/airlock/hostile*.wasm
ls tools/target/airlock/ tools/target/airlock-fixtures/
