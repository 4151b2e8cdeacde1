//! Creating private files (import's, and the password files of `mailgun`): never over an existing file, each created exclusively with
//! its final mode (0600) before a byte is written, so no umask or race exposes a
//! password; a new directory is 0700. What one run created is removed again if the
//! run fails before the end.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::fs::{explain, sync_dir};

/// Mode of every file import creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every directory import creates.
pub const DIR_MODE: u32 = 0o700;

/// Fails, naming the file, when something (even a dangling link) is at `path`.
pub fn refuse_existing(path: &Path) -> Result<()> {
    if fs::symlink_metadata(path).is_ok() {
        bail!(
            "{}: already exists; import never overwrites a file: move it away or choose another name",
            path.display()
        );
    }
    Ok(())
}

/// Files and directories created by this run, removed on drop unless [`Created::keep`]
/// is called.
#[derive(Debug, Default)]
pub struct Created {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Created {
    /// Creates `dir` and its missing parents (each 0700); an existing directory is used.
    pub fn dir(&mut self, dir: &Path) -> Result<()> {
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && fs::symlink_metadata(a).is_err())
            .map(Path::to_path_buf)
            .collect();
        for d in missing.iter().rev() {
            DirBuilder::new()
                .mode(DIR_MODE)
                .create(d)
                .map_err(|e| explain(e, d, "create directory"))?;
            self.dirs.push(d.clone());
        }
        let meta = fs::metadata(dir).map_err(|e| explain(e, dir, "access"))?;
        if !meta.is_dir() {
            bail!("{}: not a directory", dir.display());
        }
        // Others who may write here could replace a file once it is created.
        let mode = meta.permissions().mode();
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            bail!(
                "{}: writable by group or others (mode {:04o}); choose a private directory",
                dir.display(),
                mode & 0o7777
            );
        }
        Ok(())
    }

    /// Creates `path` (which must not exist) with mode 0600 and writes `bytes`, fsynced.
    pub fn file(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| explain(e, path, "create"))?;
        self.files.push(path.to_path_buf());
        // A umask can only have narrowed 0600; make it exactly 0600 before writing.
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
            .map_err(|e| explain(e, path, "chmod"))?;
        file.write_all(bytes)
            .map_err(|e| explain(e, path, "write"))?;
        file.sync_all().map_err(|e| explain(e, path, "fsync"))?;
        sync_dir(path)
    }

    /// Keeps everything created.
    pub fn keep(mut self) {
        self.files.clear();
        self.dirs.clear();
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = fs::remove_file(f);
        }
        for d in self.dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn creates_private_files_and_directories_and_removes_them_unless_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let file = dir.join("f");
        {
            let mut c = Created::default();
            c.dir(&dir).unwrap();
            c.file(&file, b"x\n").unwrap();
            assert_eq!(fs::metadata(&file).unwrap().mode() & 0o7777, FILE_MODE);
            assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, DIR_MODE);
            assert_eq!(
                fs::metadata(tmp.path().join("a")).unwrap().mode() & 0o7777,
                DIR_MODE
            );
            assert!(c.file(&file, b"y").is_err(), "never over an existing file");
        }
        assert!(!tmp.path().join("a").exists(), "removed when not kept");
        let mut c = Created::default();
        c.dir(&dir).unwrap();
        c.file(&file, b"x\n").unwrap();
        c.keep();
        assert_eq!(fs::read(&file).unwrap(), b"x\n");
        let open = tmp.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = Created::default().dir(&open).unwrap_err().to_string();
        assert!(
            e.ends_with("writable by group or others (mode 0777); choose a private directory"),
            "{e}"
        );
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        Created::default().dir(&open).unwrap();
        let e = refuse_existing(&file).unwrap_err().to_string();
        assert!(e.contains("already exists; import never overwrites"), "{e}");
        assert!(refuse_existing(&dir.join("new")).is_ok());
    }
}
