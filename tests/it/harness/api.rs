//! Everything the integration tests take from the postrelay library, except in
//! parser.rs, agreement.rs and dns.rs, which test `postrelay::syntax`, the shared routing
//! rule and `postrelay::dns` themselves. The tests otherwise treat postrelay as a binary; when the
//! library's API changes, this file is the one to adapt.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use postrelay::desired::{MAX_DESIRED_SIZE, MAX_FILE_SIZE};
pub use postrelay::fs::{MAX_CONFIG_SIZE, TEMP_MARK};
pub use postrelay::managed::{LOCK, RELOAD_PENDING};
pub use postrelay::manual::{CRON_EXAMPLE, EXAMPLE_CONFIG, SERVICE_UNIT, TIMER_UNIT};
pub use postrelay::postfix::TOOL_DIR_VAR;

/// A Postfix program as postrelay finds it (PATH, then /usr/sbin and /usr/local/sbin);
/// None when it is not installed.
pub fn tool(name: &str) -> Option<PathBuf> {
    postrelay::postfix::tool(name).ok()
}

/// What `apply` would write for a desired-state file against a config dir.
pub struct Planned {
    /// Each map source that changes, by file name, with its new bytes.
    pub maps: BTreeMap<&'static str, Vec<u8>>,
    /// main.cf's new bytes, when it changes.
    pub main_cf: Option<Vec<u8>>,
}

/// The plan for `config` against the config dir `etc`, computed by the library.
pub fn planned(config: &Path, etc: &Path) -> Planned {
    let d = postrelay::desired::load(config).unwrap();
    let dir = postrelay::state::config_dir(&d, Some(etc)).unwrap();
    let state = postrelay::state::State::read(&d, dir).unwrap();
    let plan = postrelay::plan::plan(&d, &state).unwrap();
    Planned {
        maps: plan
            .maps
            .iter()
            .map(|m| (m.kind.file_name(), m.new.expose().to_vec()))
            .collect(),
        main_cf: plan.main_cf.map(|m| m.new),
    }
}
