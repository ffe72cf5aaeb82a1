//! The `host` command as a user runs it: one binary (linked once), a module
//! per subject.

mod commands;
mod serve;
