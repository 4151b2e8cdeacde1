//! `postrelay init`: writes the starter desired-state file, commented, for a new user to
//! fill in. It is created exclusively (an existing file is never overwritten) and with
//! mode 0600 from the start, since it will hold or name passwords; a directory it has to
//! create is 0700.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Result, bail};

use crate::fs::explain;

/// The starter file's text: every setting, commented out.
pub const STARTER: &str = include_str!("init/starter.toml");

/// Writes [`STARTER`] to `path`.
pub fn write(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| explain(e, dir, "create directory"))?;
    }
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            bail!("{}: exists; not overwritten", path.display())
        }
        Err(e) => return Err(explain(e, path, "create")),
    };
    file.write_all(STARTER.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| explain(e, path, "write"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_a_private_file_once() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("new/dir/postrelay.toml");
        write(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), STARTER);
        std::fs::write(&path, "mine").unwrap();
        let err = write(&path).unwrap_err().to_string();
        assert_eq!(err, format!("{}: exists; not overwritten", path.display()));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine");
    }

    #[test]
    fn the_starter_is_a_valid_desired_state_once_uncommented() {
        // Commented out, there is nothing to configure yet.
        let err = crate::desired::parse_str(STARTER).unwrap_err().to_string();
        assert!(err.contains("nothing to configure"), "{err}");
        // Its settings, uncommented (password files aside), make a valid file.
        let uncommented: String = STARTER
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .filter(|l| !l.starts_with("password_file"))
            .map(|l| format!("{l}\n"))
            .collect();
        let with_passwords = uncommented.replace(
            "username = \"postmaster@example.com\"\n",
            "username = \"postmaster@example.com\"\npassword = \"pw\"\n",
        );
        let with_passwords = with_passwords.replace(
            "username = \"postmaster@example.net\"\n",
            "username = \"postmaster@example.net\"\npassword = \"pw\"\n",
        );
        let d = crate::desired::parse_str(&with_passwords).unwrap();
        assert_eq!(d.senders.len(), 1);
        assert!(d.relayhost.is_some());
    }
}
