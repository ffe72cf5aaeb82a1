//! Outgoing HTTP, for a tool whose manifest declares hosts. Every request goes
//! through the call's outbound hooks (`crate::outbound`): checked against the
//! tool's hosts, credentialed for its OAuth grants, its answer scanned.

use wasmtime::component::Linker;
use wasmtime_wasi_http::WasiHttpView;

use super::{Capability, Granted};

pub(crate) const CAPABILITY: Capability = Capability {
    interfaces: &[
        ("wasi:http/types", "0.2"),
        ("wasi:http/outgoing-handler", "0.2"),
    ],
    granted: Granted::WithHosts,
    refusal: "the tool imports wasi:http but its manifest declares no hosts: add them to [http] hosts or to an [[oauth]] grant in tool.toml",
    class: "granted by declaration (hosts)",
};

pub(crate) fn link<T: WasiHttpView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}
