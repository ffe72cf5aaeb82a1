//! What a tool may import, one capability per module: each lists its
//! interfaces, links them, and says why it is refused when it is not granted.
//!
//! - [`basics`]: what a language runtime needs (streams, clocks, random);
//! - [`stdio`]: captured stdout and stderr, an empty stdin, exit;
//! - [`log`]: `airlock:tool/log` and `airlock:tool/types`;
//! - [`http`]: outgoing `wasi:http`, only for a tool that declares hosts;
//! - [`inert`]: what standard toolchains always import but that grants
//!   nothing when the host gives it nothing (a filesystem with no preopened
//!   directory, an empty environment, no terminal); refused in strict mode.
//!
//! Everything else (sockets, name lookup, serving HTTP, unknown interfaces)
//! is refused, named in the error. Imports are checked on their names alone
//! before compiling, so a refused tool costs nothing; the linker defines only
//! these interfaces as well, so an import that slipped past the check would
//! still fail to link.

pub(crate) mod basics;
pub(crate) mod http;
pub(crate) mod inert;
pub(crate) mod log;
pub(crate) mod stdio;

use airlock_policy::Grants;

use crate::report::RefusedImport;

/// Which imports a check allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImportMode {
    /// Inert interfaces are linked (standard toolchains' components load).
    #[default]
    Inert,
    /// Inert interfaces are refused too.
    Strict,
}

/// When a capability's interfaces are granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Granted {
    /// To every tool.
    Always,
    /// To a tool whose manifest declares hosts.
    WithHosts,
    /// Unless imports are strict.
    UnlessStrict,
}

/// One capability: its interfaces (name, supported version prefix), when it
/// is granted, and why it is refused when it is not.
pub(crate) struct Capability {
    pub(crate) interfaces: &'static [(&'static str, &'static str)],
    pub(crate) granted: Granted,
    /// Why an import is refused when it is not granted (unused for `Always`).
    pub(crate) refusal: &'static str,
    /// How it is described in [`classes`].
    pub(crate) class: &'static str,
}

/// Every capability, in the order the linker gets them.
const ALL: [&Capability; 5] = [
    &basics::CAPABILITY,
    &stdio::CAPABILITY,
    &log::CAPABILITY,
    &http::CAPABILITY,
    &inert::CAPABILITY,
];

impl Capability {
    fn lists(&self, name: &str, version: &str) -> bool {
        self.interfaces.iter().any(|(n, v)| {
            *n == name
                && (version == *v || version.strip_prefix(*v).is_some_and(|r| r.starts_with('.')))
        })
    }

    fn names(&self, name: &str) -> bool {
        self.interfaces.iter().any(|(n, _)| *n == name)
    }

    fn grants(&self, grants: &Grants, mode: ImportMode) -> bool {
        match self.granted {
            Granted::Always => true,
            Granted::WithHosts => grants.has_hosts(),
            Granted::UnlessStrict => mode == ImportMode::Inert,
        }
    }
}

/// What a call's store data implements for every capability's bindings.
pub(crate) trait Guest:
    wasmtime_wasi::WasiView
    + wasmtime_wasi_io::IoView
    + wasmtime_wasi_http::WasiHttpView
    + log::Host
    + log::TypesHost
    + 'static
{
}

impl<T> Guest for T where
    T: wasmtime_wasi::WasiView
        + wasmtime_wasi_io::IoView
        + wasmtime_wasi_http::WasiHttpView
        + log::Host
        + log::TypesHost
        + 'static
{
}

/// Link every capability the mode allows; which tool may use which is
/// decided per tool by [`check`] before it is compiled.
pub(crate) fn link<T: Guest>(
    linker: &mut wasmtime::component::Linker<T>,
    mode: ImportMode,
) -> wasmtime::Result<()> {
    basics::link(linker)?;
    stdio::link(linker)?;
    log::link(linker)?;
    http::link(linker)?;
    if mode == ImportMode::Inert {
        inert::link(linker)?;
    }
    Ok(())
}

/// Check every import against what `grants` allow; every refusal is returned.
pub fn check(
    imports: &[String],
    grants: &Grants,
    mode: ImportMode,
) -> Result<(), Vec<RefusedImport>> {
    let refused: Vec<RefusedImport> = imports
        .iter()
        .filter_map(|i| check_one(i, grants, mode).err())
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(refused)
    }
}

fn check_one(import: &str, grants: &Grants, mode: ImportMode) -> Result<(), RefusedImport> {
    let (name, version) = import.split_once('@').unwrap_or((import, ""));
    if let Some(capability) = ALL.iter().find(|c| c.lists(name, version)) {
        if capability.grants(grants, mode) {
            return Ok(());
        }
        return Err(refuse(import, capability.refusal));
    }
    if !version.is_empty() && ALL.iter().any(|c| c.names(name)) {
        return Err(refuse(
            import,
            "this version of the interface is not supported: rebuild against wit/ of this host (WASI 0.2, airlock:tool 0.1)",
        ));
    }
    let reason = match name.split('/').next().unwrap_or("") {
        "wasi:sockets" => {
            "tools get no sockets: reach the network through wasi:http to hosts declared in tool.toml"
        }
        "wasi:filesystem" | "wasi:cli" => "this interface is not available to tools",
        "wasi:http" => {
            "tools may only send outgoing requests (wasi:http/outgoing-handler), not serve them"
        }
        _ => {
            "the host provides no such interface to tools: see wit/tool.wit for what a tool may import"
        }
    };
    Err(refuse(import, reason))
}

/// Each interface the host links, with its class, for documentation.
pub fn classes() -> Vec<(&'static str, &'static str)> {
    ALL.iter()
        .flat_map(|c| c.interfaces.iter().map(|(n, _)| (*n, c.class)))
        .collect()
}

fn refuse(import: &str, reason: &'static str) -> RefusedImport {
    RefusedImport {
        import: import.to_string(),
        reason,
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use airlock_policy::HostPattern;

    fn with_hosts() -> Grants {
        Grants {
            hosts: vec![HostPattern::parse("https://api.example.com").unwrap()],
            oauth: vec![],
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn check_allows_basics_without_grants() {
        let imports = names(&[
            "wasi:random/insecure-seed@0.2.4",
            "airlock:tool/types@0.1.0",
            "wasi:io/streams@0.2.12",
        ]);
        assert_eq!(
            check(&imports, &Grants::default(), ImportMode::Inert),
            Ok(())
        );
    }

    #[test]
    fn inert_interfaces_load_unless_strict_and_strict_names_each() {
        let imports = names(&[
            "wasi:filesystem/preopens@0.2.6",
            "wasi:filesystem/types@0.2.6",
            "wasi:cli/environment@0.2.6",
            "wasi:cli/terminal-stdout@0.2.6",
        ]);
        assert_eq!(
            check(&imports, &Grants::default(), ImportMode::Inert),
            Ok(())
        );
        let refused = check(&imports, &Grants::default(), ImportMode::Strict).unwrap_err();
        assert_eq!(refused.len(), 4);
        for (r, i) in refused.iter().zip(&imports) {
            assert_eq!(&r.import, i);
            assert!(r.reason.contains("strict"), "{}", r.reason);
        }
    }

    #[test]
    fn check_allows_http_only_with_hosts() {
        let imports = names(&[
            "wasi:http/outgoing-handler@0.2.12",
            "wasi:http/types@0.2.12",
        ]);
        let err = check(&imports, &Grants::default(), ImportMode::Inert).unwrap_err();
        assert_eq!(err.len(), 2);
        let err = &err[0];
        assert_eq!(err.import, "wasi:http/outgoing-handler@0.2.12");
        assert!(err.reason.contains("declares no hosts"));
        assert_eq!(check(&imports, &with_hosts(), ImportMode::Inert), Ok(()));
    }

    #[test]
    fn check_refuses_sockets_serving_other_versions_and_unknown() {
        for (import, needle) in [
            ("wasi:sockets/tcp@0.2.0", "no sockets"),
            ("wasi:sockets/ip-name-lookup@0.2.0", "no sockets"),
            ("wasi:filesystem/preopens@0.3.0", "version"),
            ("wasi:http/incoming-handler@0.2.0", "not serve"),
            ("wasi:io/streams@0.3.0", "version"),
            ("evil:backdoor/shell@1.0.0", "no such interface"),
        ] {
            let err = check(&names(&[import]), &with_hosts(), ImportMode::Inert)
                .unwrap_err()
                .remove(0);
            assert_eq!(err.import, import);
            assert!(err.reason.contains(needle), "{import}: {}", err.reason);
        }
    }
}
