//! A hostile tool for the sandbox's tests. Never an example to follow.

use std::hint::black_box;

use airlock_tool::{Error, Tool};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The tool.
pub struct Hostile;

/// Which attack to run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "attack", rename_all = "snake_case")]
pub enum Input {
    /// Return `{"ok": true}`: the healthy call.
    Ok,
    /// Spin forever.
    Loop,
    /// Allocate without end.
    Memory,
    /// Recurse without end.
    Recurse,
    /// Return far more output than allowed.
    Flood,
    /// Send GET requests to `url`, `times` times (default 1).
    Fetch {
        /// Where.
        url: String,
        /// How many.
        #[serde(default)]
        times: Option<u32>,
    },
    /// Try to set an Authorization header on a request to a declared host.
    SetAuthorization {
        /// Where.
        url: String,
    },
}

/// What the attack got back.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// One entry per request: status and body, or the error the tool saw.
    pub results: Vec<serde_json::Value>,
}

#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    // Scalars only, so the wasm stack (not the shadow stack in memory) runs out.
    recurse(black_box(n) + 1).wrapping_add(black_box(n))
}

impl Tool for Hostile {
    type Input = Input;
    type Output = Output;

    #[cfg(target_arch = "wasm32")]
    fn call(input: Input) -> Result<Output, Error> {
        use serde_json::json;
        let results = match input {
            Input::Ok => vec![json!({"ok": true})],
            Input::Loop => loop {
                black_box(0u64);
            },
            Input::Memory => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    black_box(&hoard);
                }
            }
            Input::Recurse => vec![json!(recurse(0))],
            Input::Flood => vec![json!("x".repeat(4 << 20))],
            Input::Fetch { url, times } => (0..times.unwrap_or(1))
                .map(|_| match airlock_tool::http::get(&url, &[]) {
                    Ok(r) => json!({"status": r.status, "body": String::from_utf8_lossy(&r.body), "headers": r.headers.iter().map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v))).collect::<Vec<_>>()}),
                    Err(e) => json!({"error": format!("{e:?}")}),
                })
                .collect(),
            Input::SetAuthorization { url } => {
                match airlock_tool::http::get(&url, &[("authorization", "Bearer stolen")]) {
                    Ok(r) => vec![json!({"status": r.status, "body": String::from_utf8_lossy(&r.body)})],
                    Err(e) => vec![json!({"error": format!("{e:?}")})],
                }
            }
        };
        Ok(Output { results })
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn call(_: Input) -> Result<Output, Error> {
        let _ = recurse;
        Err(Error::Failed("runs only as a component".into()))
    }
}

airlock_tool::export_tool!(Hostile);
