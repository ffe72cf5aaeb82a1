//! Write Airlock tools in Rust.
//!
//! A tool is a type implementing [`Tool`] with serde + schemars input and
//! output types, exported with [`export_tool!`]. The build (`host build`)
//! generates the JSON Schemas from those types natively, merges them with the
//! crate's `tool.toml`, and embeds the manifest in the component.
//!
//! ```
//! use airlock_tool::Tool;
//!
//! struct Echo;
//! impl Tool for Echo {
//!     type Input = String;
//!     type Output = String;
//!     fn call(input: String) -> Result<String, airlock_tool::Error> { Ok(input) }
//! }
//! airlock_tool::export_tool!(Echo);
//! # assert_eq!(Echo::call("hi".into()), Ok("hi".to_string()));
//! ```

use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};

#[cfg(target_arch = "wasm32")]
pub mod http;
#[cfg(target_arch = "wasm32")]
pub mod log;

/// Generated bindings of the `airlock:tool/tool` world (see `wit/tool.wit`).
#[cfg(target_arch = "wasm32")]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "airlock:tool/tool",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_tool_world",
        default_bindings_module: "::airlock_tool::bindings",
        generate_all,
    });
}

/// A tool: typed input in, typed output or an [`Error`] out.
pub trait Tool {
    /// What the tool accepts; its JSON Schema becomes the manifest's input schema.
    type Input: DeserializeOwned + JsonSchema;
    /// What the tool returns; its JSON Schema becomes the manifest's output schema.
    type Output: Serialize + JsonSchema;
    /// Run once, in a fresh instance.
    fn call(input: Self::Input) -> Result<Self::Output, Error>;
}

/// Why a call failed, as reported to the host (`tool-error` in the WIT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input was valid JSON but not acceptable.
    InvalidInput(String),
    /// A service the tool called failed.
    Upstream(String),
    /// Anything else.
    Failed(String),
}

/// Decode the input, run the tool, encode the output. Used by [`export_tool!`].
#[doc(hidden)]
pub fn run<T: Tool>(input: &str) -> Result<String, Error> {
    let input: T::Input =
        serde_json::from_str(input).map_err(|e| Error::InvalidInput(e.to_string()))?;
    let output = T::call(input)?;
    serde_json::to_string(&output).map_err(|e| Error::Failed(format!("encoding output: {e}")))
}

/// The input and output JSON Schemas of a tool, as the build embeds them.
pub fn schemas<T: Tool>() -> serde_json::Value {
    serde_json::json!({
        "input": schemars::schema_for!(T::Input),
        "output": schemars::schema_for!(T::Output),
    })
}

/// Print [`schemas`] as JSON on stdout: the body of a tool's `schema` binary.
pub fn print_schemas<T: Tool>() {
    println!("{}", schemas::<T>());
}

/// Export a [`Tool`] as the component's `invoke`.
///
/// The crate's `src/bin/schema.rs` calls [`print_schemas`] for the same type;
/// the build runs it natively to embed the schemas.
#[macro_export]
macro_rules! export_tool {
    ($tool:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Export;
            impl $crate::bindings::Guest for Export {
                fn invoke(
                    input: ::std::string::String,
                ) -> ::std::result::Result<
                    ::std::string::String,
                    $crate::bindings::airlock::tool::types::ToolError,
                > {
                    use $crate::bindings::airlock::tool::types::ToolError;
                    $crate::run::<$tool>(&input).map_err(|e| match e {
                        $crate::Error::InvalidInput(m) => ToolError::InvalidInput(m),
                        $crate::Error::Upstream(m) => ToolError::Upstream(m),
                        $crate::Error::Failed(m) => ToolError::Failed(m),
                    })
                }
            }
            $crate::bindings::__export_tool_world!(Export with_types_in $crate::bindings);
        };

    };
}
