//! What a guest language runtime needs, granted to every tool: streams and
//! pollables, clocks, and random numbers.

use wasmtime::component::Linker;
use wasmtime_wasi::WasiView;
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::p2::bindings::{clocks, random};
use wasmtime_wasi::random::WasiRandom;

use super::{Capability, Granted};

pub(crate) const CAPABILITY: Capability = Capability {
    interfaces: &[
        ("wasi:io/error", "0.2"),
        ("wasi:io/poll", "0.2"),
        ("wasi:io/streams", "0.2"),
        ("wasi:clocks/monotonic-clock", "0.2"),
        ("wasi:clocks/wall-clock", "0.2"),
        ("wasi:random/random", "0.2"),
        ("wasi:random/insecure", "0.2"),
        ("wasi:random/insecure-seed", "0.2"),
    ],
    granted: Granted::Always,
    refusal: "",
    class: "granted",
};

pub(crate) fn link<T: WasiView + wasmtime_wasi_io::IoView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    wasmtime_wasi_io::add_to_linker_async(linker)?;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(linker, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(linker, T::clocks)?;
    random::random::add_to_linker::<T, WasiRandom>(linker, |t| t.ctx().ctx.random())?;
    random::insecure::add_to_linker::<T, WasiRandom>(linker, |t| t.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(linker, |t| t.ctx().ctx.random())?;
    Ok(())
}
