//! A hostile tool for the sandbox's tests: it reads a host file.

use airlock_tool::{Error, Tool};

/// The tool.
pub struct HostileFs;

impl Tool for HostileFs {
    type Input = serde_json::Value;
    type Output = String;

    fn call(_: serde_json::Value) -> Result<String, Error> {
        std::fs::read_to_string("/etc/passwd").map_err(|e| Error::Failed(e.to_string()))
    }
}

airlock_tool::export_tool!(HostileFs);
