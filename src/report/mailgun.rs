//! The words of `postrelay mailgun`: what sync did to each domain, and the steps of a
//! rotation. Logins, domains and file paths only; never a password or the API key.

use std::fmt::Write as _;

use crate::mailgun::{Action, Rotated, Synced};

/// `mailgun sync`'s report: one line a domain that needed something, then a summary
/// and the next step.
pub fn synced(s: &Synced) -> String {
    let mut out = String::new();
    let would = if s.dry_run { "would be " } else { "" };
    for a in &s.actions {
        let _ = match a {
            Action::Added {
                domain,
                login,
                password_file,
                resumed: false,
            } => writeln!(
                out,
                "+ {domain}: login {login} {would}created, password in {}",
                password_file.display()
            ),
            Action::Added {
                domain,
                login,
                password_file,
                resumed: true,
            } => writeln!(
                out,
                "+ {domain}: login {login} and {} left by an earlier run, {would}reused",
                password_file.display()
            ),
            Action::Present { .. } => Ok(()),
            Action::Disabled { domain } => {
                writeln!(out, "- {domain}: disabled at Mailgun, left out")
            }
            Action::Unusable { domain, why } => {
                writeln!(
                    out,
                    "! {domain:?}: not a domain name postrelay takes ({why}): left out"
                )
            }
            Action::Foreign { domain, login } => writeln!(
                out,
                "! {domain}: the login {login} exists at Mailgun but its password is not here (another host's?): left out; choose another name with --login"
            ),
        };
    }
    let present = s
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Present { .. }))
        .count();
    let _ = writeln!(
        out,
        "postrelay: mailgun sync: {} domain(s) in the account ({}), {present} already in {}, {} {}added{}",
        s.total,
        s.region,
        s.config.display(),
        s.added(),
        would,
        match s.left_out() {
            0 => String::new(),
            n => format!(", {n} left out"),
        }
    );
    if s.added() > 0 && !s.dry_run {
        let _ = writeln!(
            out,
            "next: postrelay plan, then postrelay apply --verify (nothing was applied)"
        );
    }
    out
}

/// `mailgun rotate`'s report: the five steps as done.
pub fn rotated(r: &Rotated) -> String {
    let mut out = String::new();
    let reused = if r.resumed {
        " (from an earlier run)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "1. password file {}{reused}",
        r.password_file.display()
    );
    let _ = writeln!(out, "2. login {} at Mailgun{reused}", r.new_login);
    let _ = writeln!(
        out,
        "3. the relay accepted {} ({} check(s))",
        r.new_login,
        r.checks.len()
    );
    let _ = writeln!(
        out,
        "4. {} now names {}; applied ({})",
        r.config.display(),
        r.new_login,
        match r.outcome.steps.is_empty() {
            true => "no changes",
            false => "changed",
        }
    );
    let _ = writeln!(
        out,
        "5. old login {} deleted at Mailgun{}",
        r.old_login,
        match &r.removed_file {
            Some(f) => format!(", {} removed", f.display()),
            None => String::new(),
        }
    );
    let _ = writeln!(
        out,
        "postrelay: mailgun rotate: {} now sends as {}",
        r.domain, r.new_login
    );
    out
}
