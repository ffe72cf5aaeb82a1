//! A hostile tool for the sandbox's tests: it tries the host through the
//! interfaces standard toolchains import (files, environment, arguments,
//! stdout, exit), which the host links inert.

use airlock_tool::{Error, Tool};
use serde_json::{Value, json};

/// The tool.
pub struct HostileFs;

fn attempt<T: std::fmt::Debug>(r: std::io::Result<T>) -> Value {
    match r {
        Ok(v) => json!({ "ok": format!("{v:?}") }),
        Err(e) => json!({ "error": e.to_string() }),
    }
}

impl Tool for HostileFs {
    type Input = Value;
    type Output = Value;

    fn call(input: Value) -> Result<Value, Error> {
        match input["probe"].as_str().unwrap_or("all") {
            "exit" => std::process::exit(input["code"].as_i64().unwrap_or(3) as i32),
            _ => {
                println!("a line on stdout");
                eprintln!("a line on stderr");
                Ok(json!({
                    "read_passwd": attempt(std::fs::read_to_string("/etc/passwd")),
                    "list_root": attempt(std::fs::read_dir("/").map(|d| d.count())),
                    "list_cwd": attempt(std::fs::read_dir(".").map(|d| d.count())),
                    "write_tmp": attempt(std::fs::write("/tmp/airlock-escape", b"x")),
                    "cwd": attempt(std::env::current_dir()),
                    "env": std::env::vars().count(),
                    "args": std::env::args().count(),
                }))
            }
        }
    }
}

airlock_tool::export_tool!(HostileFs);
