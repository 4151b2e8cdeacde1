//! Crash points for the fault-injection tests: in debug builds, `hit("name")` kills the
//! process with SIGKILL when `POSTRELAY_FAILPOINT=name`, at the exact step of apply the
//! name stands for — no destructor runs, no temporary file is cleaned up, as in a power
//! cut. Release builds compile every call to nothing, so the variable does not exist
//! for users.
//!
//! Points: `staged:MAP` (temporary source written), `postmap:MAP` (temporary map
//! compiled), `renamed-compiled:MAP`, `renamed-source:MAP`, `main.cf` (main.cf
//! replaced), `check` (after `postfix check`), `reload` (after `postfix reload`),
//! `rolled-back:PATH` (one file restored during a rollback).

#[cfg(debug_assertions)]
pub fn hit(name: &str) {
    if std::env::var_os("POSTRELAY_FAILPOINT").is_some_and(|v| v == name) {
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; this is never reached.
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hit(_name: &str) {}
