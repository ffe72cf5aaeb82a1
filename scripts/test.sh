#!/usr/bin/env bash
# The test command: install the test peers, build every tool and every binary
# the tests start, then run every test binary of both workspaces (a failure in
# one never hides the others) and close with one line:
#   all tests: N passed, M failed
# Timings of each phase and each test binary go to stderr.
set -uo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
times=$(mktemp)
trap 'rm -f "$log" "$times"' EXIT
phase() { # phase NAME COMMAND...: run it, record its seconds; stop on failure.
  local name=$1 start=$SECONDS
  shift
  if ! "$@"; then
    echo "scripts/test.sh: $name failed: nothing was tested" >&2
    echo "all tests: 0 passed, 1 failed"
    exit 1
  fi
  printf '%-28s %5ss\n' "$name" $((SECONDS - start)) >>"$times"
}

# The peers first (node, npm, Chromium, oidc-provider, the MCP clients, moto,
# cfn-lint): the JavaScript tools are built with npm's componentize-js.
phase "peers setup" scripts/setup-test-peers.sh
phase "tools build" scripts/build-tools.sh
# Whatever a test starts as a process is built here: `cargo test` builds a
# package's binaries only for that package's own tests.
phase "binaries build" cargo build --workspace --bins
phase "tests build" cargo test --workspace --no-run
phase "tools tests build" bash -c 'cd tools && cargo test --workspace --no-run'

failed=0
start=$SECONDS
(cd tools && cargo test --workspace --no-fail-fast) 2>&1 | tee -a "$log" || failed=1
cargo test --workspace --no-fail-fast 2>&1 | tee -a "$log" || failed=1
printf '%-28s %5ss\n' "tests run" $((SECONDS - start)) >>"$times"

{
  echo "--- time by phase"
  cat "$times"
  echo "--- time by test binary"
  awk '/^ *Doc-tests/ { name = $2 " (doc)" }
       /^ *Running/ { name = $NF; gsub(/[()]/, "", name); sub(/.*\//, "", name); sub(/-[0-9a-f]+$/, "", name)
                      if ($2 == "unittests") name = name " (unit)" }
       /^test result:/ { t = $NF; sub(/s$/, "", t); printf "%-44s %4d passed %3d failed %7.1fs\n", name, $4, $6, t }' "$log"
} >&2
# One closing line over both workspaces; a binary that ended without its
# result line (a crash, a build error) counts as a failure too.
awk -v failed="$failed" '/^test result:/ { p += $4; f += $6 }
  END { if (failed && f == 0) f = 1; printf "all tests: %d passed, %d failed\n", p, f; exit (f > 0) }' "$log"
