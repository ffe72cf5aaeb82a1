//! The manifest that travels inside an Airlock tool's `.wasm`.
//!
//! Tool authors write `tool.toml` next to their code; the build adds the JSON
//! Schemas generated from the tool's Rust types and embeds the result, as JSON,
//! in a custom section named [`SECTION`] of the component. The host reads it
//! (and the component's imports) with a parser alone: no guest code runs.

use airlock_policy::{Grants, HostPattern, LimitsRequest, OAuthGrant, PolicyError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use wasmparser::{Encoding, Parser, Payload};

/// The custom section holding the manifest.
pub const SECTION: &str = "airlock-manifest";

/// The manifest format this host reads and writes.
pub const FORMAT: u32 = 1;

/// What is wrong with a `.wasm` or its manifest. Each message names the
/// problem and how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not WebAssembly at all.
    #[error(
        "not a WebAssembly file (no `\\0asm` header): build the tool with `host build <folder>`"
    )]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component: build for wasm32-wasip2 (`host build <folder>`) so the tool is a WASI 0.2 component"
    )]
    CoreModule,
    /// The binary is malformed.
    #[error("the .wasm is corrupt: {0}")]
    Corrupt(String),
    /// No manifest section.
    #[error(
        "the component has no `airlock-manifest` section: build it with `host build <folder>`, which embeds tool.toml and the schemas"
    )]
    Missing,
    /// More than one manifest section.
    #[error(
        "the component has more than one `airlock-manifest` section; rebuild it from the tool's folder"
    )]
    Duplicate,
    /// The section is not a valid manifest.
    #[error("invalid manifest: {0}")]
    Invalid(String),
    /// A grant or limit is invalid.
    #[error("invalid manifest: {0}")]
    Policy(#[from] PolicyError),
}

/// The manifest: who the tool is, what it takes and returns, what it may reach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// Lower-case letters, digits and `-`, 1 to 64 characters; e.g. `github-issues`.
    pub name: String,
    /// Semantic version, e.g. `0.1.0`.
    pub version: String,
    /// One or two sentences an agent reads to choose the tool.
    pub description: String,
    /// JSON Schema of the input.
    pub input_schema: Value,
    /// JSON Schema of the output.
    pub output_schema: Value,
    /// Hosts and OAuth grants.
    #[serde(default)]
    pub grants: Grants,
    /// Limits the tool asks for; the operator's policy caps them.
    #[serde(default)]
    pub limits: LimitsRequest,
}

/// `tool.toml`, as a tool author writes it.
///
/// ```toml
/// name = "github-issues"
/// version = "0.1.0"
/// description = "List the signed-in user's open GitHub issues."
/// [http]
/// hosts = ["https://api.example.com"]   # called without credentials
/// [[oauth]]
/// provider = "github"                   # the credential provider's name
/// scopes = ["repo"]                     # the smallest scopes that suffice
/// hosts = ["https://api.github.com"]    # the hosts the token is for
/// [limits]
/// timeout_ms = 5000                     # also memory_mib, output_kib, max_requests
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolToml {
    /// See [`Manifest::name`].
    pub name: String,
    /// See [`Manifest::version`].
    pub version: String,
    /// See [`Manifest::description`].
    pub description: String,
    /// Hosts called without credentials.
    #[serde(default)]
    pub http: HttpSection,
    /// OAuth grants.
    #[serde(default)]
    pub oauth: Vec<OAuthGrant>,
    /// Limits asked for.
    #[serde(default)]
    pub limits: LimitsRequest,
    /// How a component from any toolchain is built (absent: a Rust tool
    /// built by `host build`).
    #[serde(default)]
    pub build: Option<BuildSection>,
}

/// `[build]` in `tool.toml`: the convention Spin uses. `host build` runs
/// `command` in the tool's folder, then embeds the manifest into `output`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSection {
    /// A shell command, run in the tool's folder, e.g. `componentize-py ...`.
    pub command: String,
    /// The component it writes, relative to the folder.
    pub output: std::path::PathBuf,
    /// A JSON file `{"input": schema, "output": schema}`, relative to the
    /// folder (default: any JSON object in, any JSON out).
    #[serde(default)]
    pub schemas: Option<std::path::PathBuf>,
}

impl ToolToml {
    /// Parse `tool.toml`'s text.
    pub fn parse(text: &str) -> Result<ToolToml, ManifestError> {
        toml::from_str(text).map_err(|e| ManifestError::Invalid(format!("tool.toml: {e}")))
    }
}

/// `[http]` in `tool.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// e.g. `["https://api.frankfurter.dev"]`.
    #[serde(default)]
    pub hosts: Vec<HostPattern>,
}

impl Manifest {
    /// Build from `tool.toml` and the schemas the tool's types generate
    /// (`{"input": .., "output": ..}`), and validate.
    pub fn from_tool_toml(text: &str, schemas: &Value) -> Result<Manifest, ManifestError> {
        let t: ToolToml =
            toml::from_str(text).map_err(|e| ManifestError::Invalid(format!("tool.toml: {e}")))?;
        let schema = |key: &str| {
            schemas.get(key).cloned().ok_or_else(|| {
                ManifestError::Invalid(format!("the generated schemas lack `{key}`"))
            })
        };
        let manifest = Manifest {
            format: FORMAT,
            name: t.name,
            version: t.version,
            description: t.description,
            input_schema: schema("input")?,
            output_schema: schema("output")?,
            grants: Grants {
                hosts: t.http.hosts,
                oauth: t.oauth,
            },
            limits: t.limits,
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// Parse the JSON of an embedded section and validate it.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The JSON that is embedded.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serializes")
    }

    /// Check every field; the error names the field and the expected form.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let invalid = |m: String| Err(ManifestError::Invalid(m));
        if self.format != FORMAT {
            return invalid(format!(
                "format {} is not supported (this host reads {FORMAT}); rebuild the tool",
                self.format
            ));
        }
        if !airlock_policy::ToolName::is_valid(&self.name) {
            return invalid(format!(
                "name `{}`: use {}",
                self.name,
                airlock_policy::ToolName::RULE
            ));
        }
        let parts: Vec<&str> = self
            .version
            .split(['-', '+'])
            .next()
            .unwrap_or("")
            .split('.')
            .collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return invalid(format!(
                "version `{}`: use a semantic version such as 0.1.0",
                self.version
            ));
        }
        if self.description.trim().is_empty() || self.description.len() > 1024 {
            return invalid(
                "description: write 1 to 1024 characters that tell an agent what the tool does"
                    .into(),
            );
        }
        for (key, schema) in [
            ("input_schema", &self.input_schema),
            ("output_schema", &self.output_schema),
        ] {
            if !schema.is_object() && !schema.is_boolean() {
                return invalid(format!("{key}: a JSON Schema is an object"));
            }
        }
        self.grants.validate()?;
        Ok(())
    }
}

/// What the host learns from a `.wasm` without running it.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// The embedded manifest.
    pub manifest: Manifest,
    /// The component's top-level instance and function imports, e.g.
    /// `wasi:http/outgoing-handler@0.2.12`; type imports are left out.
    pub imports: Vec<String>,
}

/// Read the manifest and the imports of a component.
pub fn inspect(wasm: &[u8]) -> Result<Inspected, ManifestError> {
    let mut manifest = None;
    let mut imports = Vec::new();
    for_each_top_level(wasm, |payload| {
        match payload {
            Payload::CustomSection(c) if c.name() == SECTION => {
                if manifest.is_some() {
                    return Err(ManifestError::Duplicate);
                }
                manifest = Some(Manifest::from_json(c.data())?);
            }
            Payload::ComponentImportSection(reader) => {
                for import in reader.clone() {
                    let import = import.map_err(|e| ManifestError::Corrupt(e.to_string()))?;
                    // A type import (from a WIT `use`) grants nothing; only instances and functions do.
                    if !matches!(import.ty, wasmparser::ComponentTypeRef::Type(_)) {
                        imports.push(import.name.name.to_string());
                    }
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(Inspected {
        manifest: manifest.ok_or(ManifestError::Missing)?,
        imports,
    })
}

/// Append the manifest to a component that has none.
pub fn embed(component: &[u8], manifest: &Manifest) -> Result<Vec<u8>, ManifestError> {
    manifest.validate()?;
    let mut existing = false;
    for_each_top_level(component, |payload| {
        if let Payload::CustomSection(c) = payload {
            existing |= c.name() == SECTION;
        }
        Ok(())
    })?;
    if existing {
        return Err(ManifestError::Duplicate);
    }
    Ok(with_custom_section(component, SECTION, &manifest.to_json()))
}

/// The component without its embedded manifest (every other byte kept), so
/// that another manifest can be embedded in its place.
pub fn without_manifest(component: &[u8]) -> Result<Vec<u8>, ManifestError> {
    for_each_top_level(component, |_| Ok(()))?;
    let corrupt = || ManifestError::Corrupt("a section runs past the end".into());
    let mut out = component[..8].to_vec();
    let mut pos = 8;
    while pos < component.len() {
        let start = pos;
        let id = component[pos];
        let (size, n) = read_leb128(&component[pos + 1..]).ok_or_else(corrupt)?;
        let body = pos + 1 + n;
        let end = body
            .checked_add(size)
            .filter(|e| *e <= component.len())
            .ok_or_else(corrupt)?;
        let ours = id == 0
            && read_leb128(&component[body..end]).is_some_and(|(len, n)| {
                component[body + n..end].get(..len) == Some(SECTION.as_bytes())
            });
        if !ours {
            out.extend_from_slice(&component[start..end]);
        }
        pos = end;
    }
    Ok(out)
}

/// An unsigned LEB128 number and its length in bytes.
fn read_leb128(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut n: usize = 0;
    for (i, b) in bytes.iter().take(5).enumerate() {
        n |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, i + 1));
        }
    }
    None
}

/// `wasm` with a custom section `name` holding `data` appended (no checks).
pub fn with_custom_section(wasm: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(name.len() + data.len() + 5);
    leb128(&mut body, name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(data);
    let mut out = Vec::with_capacity(wasm.len() + body.len() + 6);
    out.extend_from_slice(wasm);
    out.push(0); // custom section id
    leb128(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// Walk the payloads of the outer component only; nested modules and
/// components are skipped. Refuses core modules and malformed binaries.
fn for_each_top_level(
    wasm: &[u8],
    mut f: impl FnMut(&Payload<'_>) -> Result<(), ManifestError>,
) -> Result<(), ManifestError> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(ManifestError::NotWasm);
    }
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| ManifestError::Corrupt(e.to_string()))?;
        match &payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 && *encoding == Encoding::Module {
                    return Err(ManifestError::CoreModule);
                }
                depth += 1;
            }
            Payload::End(_) => depth -= 1,
            _ if depth == 1 => f(&payload)?,
            _ => {}
        }
    }
    if depth != 0 {
        return Err(ManifestError::Corrupt(
            "the binary ends inside a section".into(),
        ));
    }
    Ok(())
}

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The smallest valid component: magic, version 0x0d, layer 1.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\x00\x00\x00";

    fn schemas() -> Value {
        serde_json::json!({"input": {"type": "object"}, "output": {"type": "object"}})
    }

    fn manifest() -> Manifest {
        Manifest::from_tool_toml(
            "name = \"demo\"\nversion = \"0.1.0\"\ndescription = \"A demo.\"\n[[oauth]]\nprovider = \"github\"\nscopes = [\"repo\"]\nhosts = [\"https://api.github.com\"]\n",
            &schemas(),
        )
        .unwrap()
    }

    #[test]
    fn embed_then_inspect_round_trips() {
        let wasm = embed(EMPTY_COMPONENT, &manifest()).unwrap();
        let got = inspect(&wasm).unwrap();
        assert_eq!(got.manifest, manifest());
        assert!(got.imports.is_empty());
    }

    #[test]
    fn a_manifest_is_replaced_by_removing_it_first_and_nothing_else_goes() {
        let other = with_custom_section(EMPTY_COMPONENT, "other", b"kept");
        let wasm = embed(&other, &manifest()).unwrap();
        let bare = without_manifest(&wasm).unwrap();
        assert_eq!(bare, other, "only the manifest's section is gone");
        assert!(matches!(inspect(&bare), Err(ManifestError::Missing)));
        let mut renamed = manifest();
        renamed.name = "demo-two".into();
        let again = embed(&bare, &renamed).unwrap();
        assert_eq!(inspect(&again).unwrap().manifest.name, "demo-two");
        assert!(matches!(
            without_manifest(EMPTY_MODULE),
            Err(ManifestError::CoreModule)
        ));
    }

    #[test]
    fn embed_twice_is_refused() {
        let wasm = embed(EMPTY_COMPONENT, &manifest()).unwrap();
        assert!(matches!(
            embed(&wasm, &manifest()),
            Err(ManifestError::Duplicate)
        ));
    }

    #[test]
    fn inspect_names_missing_core_corrupt_and_junk() {
        assert!(matches!(
            inspect(EMPTY_COMPONENT),
            Err(ManifestError::Missing)
        ));
        assert!(matches!(
            inspect(EMPTY_MODULE),
            Err(ManifestError::CoreModule)
        ));
        assert!(matches!(
            inspect(b"hello world!"),
            Err(ManifestError::NotWasm)
        ));
        let wasm = embed(EMPTY_COMPONENT, &manifest()).unwrap();
        assert!(matches!(
            inspect(&wasm[..wasm.len() - 3]),
            Err(ManifestError::Corrupt(_))
        ));
    }

    #[test]
    fn tool_toml_errors_name_the_field() {
        let err = Manifest::from_tool_toml(
            "name = \"Bad Name\"\nversion = \"0.1.0\"\ndescription = \"x\"",
            &schemas(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("name `Bad Name`"), "{err}");
        let err = Manifest::from_tool_toml(
            "name = \"a\"\nversion = \"1\"\ndescription = \"x\"",
            &schemas(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("version `1`"), "{err}");
        let err = Manifest::from_tool_toml(
            "name = \"a\"\nversion = \"0.1.0\"\ndescription = \"x\"\nhostz = 1",
            &schemas(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("hostz"), "{err}");
        let err = Manifest::from_tool_toml(
            "name = \"a\"\nversion = \"0.1.0\"\ndescription = \"x\"\n[http]\nhosts = [\"api.example.com\"]",
            &schemas(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("api.example.com"), "{err}");
    }

    #[test]
    fn json_manifest_with_unknown_field_is_refused() {
        let mut v = serde_json::to_value(manifest()).unwrap();
        v["secret_backdoor"] = true.into();
        let err = Manifest::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(err.to_string().contains("secret_backdoor"), "{err}");
    }
}
