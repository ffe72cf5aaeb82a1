//! Linked inert: what standard toolchains always import, present and empty.
//! The call's WASI context preopens no directory (no descriptor to open
//! anything from), sets no environment or arguments, and no stream is a
//! terminal. Strict mode refuses these imports instead.

use wasmtime::component::Linker;
use wasmtime_wasi::WasiView;
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::{cli, filesystem};

use super::{Capability, Granted};

pub(crate) const CAPABILITY: Capability = Capability {
    interfaces: &[
        ("wasi:filesystem/types", "0.2"),
        ("wasi:filesystem/preopens", "0.2"),
        ("wasi:cli/environment", "0.2"),
        ("wasi:cli/terminal-input", "0.2"),
        ("wasi:cli/terminal-output", "0.2"),
        ("wasi:cli/terminal-stdin", "0.2"),
        ("wasi:cli/terminal-stdout", "0.2"),
        ("wasi:cli/terminal-stderr", "0.2"),
    ],
    granted: Granted::UnlessStrict,
    refusal: "strict imports: the host links this interface inert (no files, empty environment, no terminal) only when strict mode is off",
    class: "linked inert",
};

pub(crate) fn link<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let fs = T::filesystem;
    filesystem::types::add_to_linker::<T, WasiFilesystem>(linker, fs)?;
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(linker, fs)?;
    let view = T::cli;
    cli::environment::add_to_linker::<T, WasiCli>(linker, view)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(linker, view)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(linker, view)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(linker, view)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(linker, view)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(linker, view)?;
    Ok(())
}
