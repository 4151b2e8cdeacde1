//! Holding mail in the queue while its route switches: which senders a plan moves to
//! another relay, the transient table that defers their mail meanwhile, and how that
//! table is named in main.cf (and found again after a crash).
//!
//! Why: Postfix's daemons do not switch together. After `postfix reload` the queue
//! manager that ran before keeps dispatching, with trivial-rewrite's old answers, until
//! it exits, while smtp processes started after the reload already read the new maps.
//! A message routed by the old sender_relay and authenticated with the new sasl_passwd
//! bounces (`530`) or carries its password to another relay (docs/reliability.md,
//! "A change under traffic"). So on a running instance apply switches in three steps
//! (`apply::held`): (1) list the hold first in [`PARAMETER`], sending the moved
//! senders' mail to Postfix's [`SERVICE`] service (error(8) in retry mode: deferred,
//! kept in the queue), reload and wait for the old routing daemons to exit; (2) replace
//! the maps and main.cf with the hold still listed, reload and wait again; (3) once the
//! smtp processes that read the old maps have exited, drop the hold, reload, remove the
//! hold's table and flush the queue, so the held mail leaves by its new route. A moved
//! sender's message is routed before step 1 (old maps throughout), after step 3 (new
//! maps throughout), or held.
//!
//! The senders are the keys of sender_relay whose entry a plan adds, removes or
//! changes, held in `texthash:DIR/postrelay_hold` (read once by trivial-rewrite; no
//! postmap). When the old routing is not known from sender_relay alone (relayhost or a
//! map parameter changes, the compiled map disagrees, a reload is owed), every
//! sender is held, with `static:{retry:...}`. Bounces (null sender) never consult
//! sender-dependent maps and are not held.

use std::path::Path;

use crate::syntax::maincf::{self, MainCf};

/// The table of held senders, in the config directory.
pub const FILE: &str = "postrelay_hold";

/// The main.cf parameter the hold is listed in (first; what was listed stays after).
pub const PARAMETER: &str = crate::managed::SENDER_TRANSPORT_MAPS;

/// The master.cf service that defers what it is given (error(8) named `retry`).
pub const SERVICE: &str = "retry";

/// Why `retry` defers a held message (its `delay_reason` in the queue).
pub const REASON: &str = "postrelay is switching this sender's relay";

/// The transport and next hop of a held sender: `retry` defers with [`REASON`].
const ROUTE: &str = "retry:4.3.0 postrelay is switching this sender's relay";

/// Which senders' mail is held while Postfix switches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// sender_relay keys (`@domain`, `user@domain`) whose route changes.
    Senders(Vec<String>),
    /// Every sender: the old routing cannot be told from sender_relay alone.
    All,
}

impl Hold {
    /// The element listed first in [`PARAMETER`] while the hold lasts.
    pub fn element(&self, dir: &Path) -> String {
        match self {
            Hold::Senders(_) => format!("texthash:{}", dir.join(FILE).display()),
            Hold::All => format!("static:{{{ROUTE}}}"),
        }
    }

    /// The bytes of [`FILE`], for [`Hold::Senders`].
    pub fn table(&self) -> Option<Vec<u8>> {
        match self {
            Hold::Senders(keys) => Some(
                keys.iter()
                    .flat_map(|k| format!("{k} {ROUTE}\n").into_bytes())
                    .collect(),
            ),
            Hold::All => None,
        }
    }

    /// main.cf with the hold listed first in [`PARAMETER`].
    pub fn main_cf(&self, current: &[u8], dir: &Path) -> Vec<u8> {
        let mut doc = MainCf::parse(current);
        let mut list = vec![self.element(dir)];
        let value = doc.get(PARAMETER).unwrap_or_default();
        list.extend(maincf::list(&value).into_iter().map(str::to_string));
        doc.set_all(&[(PARAMETER, &list.join(", "))]);
        doc.render()
    }
}

/// Whether an element of [`PARAMETER`] is a hold postrelay listed (left by a run that
/// died before removing it).
pub fn is_hold(element: &str, dir: &Path) -> bool {
    [Hold::All, Hold::Senders(Vec::new())]
        .iter()
        .any(|h| h.element(dir) == element)
}

/// [`PARAMETER`]'s value without a hold left by an earlier run, if it lists one.
pub fn leftover(doc: &MainCf, dir: &Path) -> Option<String> {
    let value = doc.get(PARAMETER)?;
    let list = maincf::list(&value);
    let kept: Vec<&str> = list.iter().copied().filter(|e| !is_hold(e, dir)).collect();
    (kept.len() < list.len()).then(|| kept.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "/etc/postfix";

    #[test]
    fn the_hold_goes_first_and_is_found_again() {
        let dir = Path::new(DIR);
        let hold = Hold::Senders(vec!["@a.test".into(), "u@b.test".into()]);
        assert_eq!(
            String::from_utf8(hold.table().unwrap()).unwrap(),
            "@a.test retry:4.3.0 postrelay is switching this sender's relay\n\
             u@b.test retry:4.3.0 postrelay is switching this sender's relay\n"
        );
        let before = b"myhostname = m\nsender_dependent_default_transport_maps = hash:/x/y\n";
        let held = hold.main_cf(before, dir);
        let doc = MainCf::parse(&held);
        assert_eq!(
            doc.get(PARAMETER).unwrap(),
            "texthash:/etc/postfix/postrelay_hold, hash:/x/y"
        );
        assert_eq!(leftover(&doc, dir).unwrap(), "hash:/x/y");
        assert_eq!(leftover(&MainCf::parse(before), dir), None);

        let all = Hold::All.main_cf(b"myhostname = m\n", dir);
        let doc = MainCf::parse(&all);
        assert_eq!(
            doc.get(PARAMETER).unwrap(),
            "static:{retry:4.3.0 postrelay is switching this sender's relay}"
        );
        assert_eq!(maincf::list(&doc.get(PARAMETER).unwrap()).len(), 1);
        assert_eq!(leftover(&doc, dir).unwrap(), "");
        assert_eq!(Hold::All.table(), None);
    }

    #[test]
    fn the_route_defers_with_the_reason_release_looks_for() {
        assert!(ROUTE.ends_with(REASON));
    }
}
