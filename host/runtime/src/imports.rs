//! Which component imports a tool may have, given its grants. Three classes:
//!
//! - granted: the basics a language runtime needs (clocks, random, streams,
//!   captured stdout/stderr, empty stdin, exit), and `wasi:http` for a tool
//!   that declares hosts;
//! - linked inert: what standard toolchains always import but that grants
//!   nothing when the host gives it nothing: a filesystem with no preopened
//!   directory, an empty environment and argument list, no terminal;
//! - refused: everything else (sockets, name lookup, serving HTTP, unknown
//!   interfaces), named in the error.
//!
//! Checked on the import names alone before compiling, so a refused tool costs
//! nothing and the error names the import. The linker defines only these
//! interfaces as well: an import that slipped past this list would still fail
//! to link. Strict mode refuses the inert class too.

use airlock_policy::Grants;

/// Why an import is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedImport {
    /// The import, e.g. `wasi:filesystem/preopens@0.2.6`.
    pub import: String,
    /// Why, and what to do instead.
    pub reason: &'static str,
}

/// Interfaces every tool may import: the basics a guest language runtime needs.
const BASICS: &[(&str, &str)] = &[
    ("wasi:io/error", "0.2"),
    ("wasi:io/poll", "0.2"),
    ("wasi:io/streams", "0.2"),
    ("wasi:clocks/monotonic-clock", "0.2"),
    ("wasi:clocks/wall-clock", "0.2"),
    ("wasi:random/random", "0.2"),
    ("wasi:random/insecure", "0.2"),
    ("wasi:random/insecure-seed", "0.2"),
    // Output goes to a small bounded buffer kept with the call's logs; stdin is empty.
    ("wasi:cli/stdout", "0.2"),
    ("wasi:cli/stderr", "0.2"),
    ("wasi:cli/stdin", "0.2"),
    ("wasi:cli/exit", "0.2"),
    ("airlock:tool/log", "0.1"),
    ("airlock:tool/types", "0.1"),
];

/// Interfaces linked inert: present, and empty. No preopened directory means
/// no descriptor to open anything from; the environment and arguments are
/// empty; no stream is a terminal.
const INERT: &[(&str, &str)] = &[
    ("wasi:filesystem/types", "0.2"),
    ("wasi:filesystem/preopens", "0.2"),
    ("wasi:cli/environment", "0.2"),
    ("wasi:cli/terminal-input", "0.2"),
    ("wasi:cli/terminal-output", "0.2"),
    ("wasi:cli/terminal-stdin", "0.2"),
    ("wasi:cli/terminal-stdout", "0.2"),
    ("wasi:cli/terminal-stderr", "0.2"),
];

/// Which imports a check allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImportMode {
    /// Inert interfaces are linked (standard toolchains' components load).
    #[default]
    Inert,
    /// Inert interfaces are refused too.
    Strict,
}

/// Interfaces only a tool that declares hosts may import.
const HTTP: &[(&str, &str)] = &[
    ("wasi:http/types", "0.2"),
    ("wasi:http/outgoing-handler", "0.2"),
];

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
    let listed = |list: &[(&str, &str)]| {
        list.iter()
            .any(|(n, v)| *n == name && (version == *v || version.starts_with(&format!("{v}."))))
    };
    if listed(BASICS) {
        return Ok(());
    }
    if listed(INERT) {
        if mode == ImportMode::Inert {
            return Ok(());
        }
        return Err(refuse(
            import,
            "strict imports: the host links this interface inert (no files, empty environment, no terminal) only when strict mode is off",
        ));
    }
    if listed(HTTP) {
        if grants.has_hosts() {
            return Ok(());
        }
        return Err(refuse(
            import,
            "the tool imports wasi:http but its manifest declares no hosts: add them to [http] hosts or to an [[oauth]] grant in tool.toml",
        ));
    }
    if !version.is_empty() && listed_name(name) {
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

fn listed_name(name: &str) -> bool {
    BASICS
        .iter()
        .chain(HTTP)
        .chain(INERT)
        .any(|(n, _)| *n == name)
}

/// Each interface the host links, with its class, for documentation.
pub fn classes() -> Vec<(&'static str, &'static str)> {
    let mut all: Vec<(&str, &str)> = BASICS.iter().map(|(n, _)| (*n, "granted")).collect();
    all.extend(
        HTTP.iter()
            .map(|(n, _)| (*n, "granted by declaration (hosts)")),
    );
    all.extend(INERT.iter().map(|(n, _)| (*n, "linked inert")));
    all
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
