//! Airlock's end-to-end tests over real processes and real peers on
//! 127.0.0.1: one binary (linked once), a module per subject.

mod binding;
mod compile_cache;
mod deploy;
mod identity;
mod inbound;
mod mcp_auth;
mod oauth;
mod s3_store;
mod sandbox;
mod scan;
mod serve;
mod stack;
mod store;
