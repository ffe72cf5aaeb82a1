#!/usr/bin/env bash
# Make guest builds (wasm32-wasip2 components) work on this machine.
#
# Uses rustc's own wasm32-wasip2 std (after `rustup target add wasm32-wasip2`)
# or a rustup nightly with rust-src and the target when one is installed;
# otherwise installs Debian's rustc-web toolchain (std sources,
# wasm-component-ld, lld), which builds std for wasm32-wasip2 with build-std.
set -euo pipefail

if sysroot=$(rustc --print sysroot 2>/dev/null) && [ -d "$sysroot/lib/rustlib/wasm32-wasip2/lib" ]; then
  echo "using rustc's own wasm32-wasip2 std: $(rustc -V)"
  exit 0
fi

if command -v rustup >/dev/null 2>&1 \
  && rustup run nightly rustc --print sysroot >/dev/null 2>&1; then
  sysroot=$(rustup run nightly rustc --print sysroot)
  if [ -d "$sysroot/lib/rustlib/wasm32-wasip2" ] && [ -d "$sysroot/lib/rustlib/src/rust/library" ]; then
    echo "using rustup nightly with wasm32-wasip2 and rust-src"
    exit 0
  fi
fi

if [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src/rust/library ] \
  && ls /usr/bin/wasm-ld-* >/dev/null 2>&1 && [ -d /usr/lib/wasm32-wasi ]; then
  echo "using Debian's rustc-web toolchain: $(/usr/bin/rustc -V)"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "no usable toolchain: install a nightly with" >&2
  echo "  rustup toolchain install nightly --component rust-src --target wasm32-wasip2" >&2
  exit 1
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
# rustc-web's LLVM major decides which lld to install.
llvm=$(apt-cache depends rust-web-llvm 2>/dev/null | sed -n 's/.*llvm-\([0-9][0-9]*\).*/\1/p' | head -n1)
llvm=${llvm:-22}
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  rustc-web cargo-web rust-web-src rust-web-llvm "lld-$llvm" wasi-libc >/dev/null
major=$(/usr/bin/rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
if [ ! -x "/usr/bin/wasm-ld-$major" ]; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "lld-$major" >/dev/null
fi
echo "installed Debian's rustc-web toolchain: $(/usr/bin/rustc -V)"
