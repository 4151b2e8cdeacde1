//! postrelay: declarative sender-dependent SASL relaying for Postfix.
//!
//! The flow is `desired` (what the user wants, validated) + the files on disk ->
//! `plan` (a value: exact new bytes and the reasons) -> `report` (redacted diff) or
//! `apply` (atomic writes under a lock, postmap, check/reload, rollback). `syntax` is
//! the pure lossless parsing underneath; `fs` and `postfix` are the only modules that
//! touch the system. The library never prints: reports are returned as text, logs go
//! through `tracing`.

pub mod apply;
pub mod cli;
pub mod desired;
pub mod failpoint;
pub mod fs;
pub mod plan;
pub mod postfix;
pub mod report;
pub mod syntax;
pub mod verify;
