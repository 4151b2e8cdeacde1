//! postrelay: declarative sender-dependent SASL relaying for Postfix.
//!
//! Data flows one way: `desired` (the desired-state file, validated) + `state` (what the
//! host holds, read once) → `plan` (a pure function: exact new bytes and typed reasons)
//! → `apply` (atomic writes under a lock, postmap, check/reload, rollback) → `report`
//! (every word the user reads, rendered from the plan, apply's steps and verify's
//! outcomes). `routing` is Postfix's lookup rule, which validation, plan and verify
//! share; `managed` names the files and parameters postrelay owns; `syntax` is the pure
//! lossless parsing of main.cf and lookup tables.
//!
//! Only `fs` (files), `postfix` (Postfix's tools), `verify` (SMTP logins), `dns` (MX
//! lookups) and the reading steps of `desired` and `state` touch the system; `apply`
//! changes it through `fs` and `postfix`; `audit` records each apply that changed
//! something or failed in the mail log, through `postfix`. The library never prints:
//! reports are returned as text, logs go through `tracing`, and every value that may
//! hold a password is a [`secret::Secret`].

pub mod apply;
pub mod audit;
pub mod cli;
pub mod conflicts;
pub mod desired;
pub mod dns;
pub mod failpoint;
pub mod fs;
pub mod hold;
pub mod import;
pub mod init;
pub mod mailgun;
pub mod managed;
pub mod manual;
pub mod plan;
pub mod postfix;
pub mod problems;
pub mod providers;
pub mod record;
pub mod report;
pub mod routing;
pub mod secret;
pub mod state;
pub mod syntax;
pub mod verify;
