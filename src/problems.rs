//! Problems with an input file, each with the file and (where there is one) the line:
//! the error type of loading the desired state and of reading main.cf.
//!
//! Where one pass can find several problems, all are collected and reported together,
//! one per line, in line order; `main` prints each as its own `postrelay: error:` line.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem, Postfix style: `FILE, line N: message` or `FILE: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line; `None` when the problem is with the file as a whole.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}, line {line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Every problem found in one file, sorted by line (whole-file problems first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems {
    file: PathBuf,
    list: Vec<Problem>,
}

impl Problems {
    pub fn new(file: &Path) -> Problems {
        Problems {
            file: file.to_path_buf(),
            list: Vec::new(),
        }
    }

    /// A single problem.
    pub fn one(file: &Path, line: Option<usize>, message: impl Into<String>) -> Problems {
        let mut p = Problems::new(file);
        p.push(line, message);
        p
    }

    pub fn push(&mut self, line: Option<usize>, message: impl Into<String>) {
        self.list.push(Problem {
            file: self.file.clone(),
            line,
            message: message.into(),
        });
    }

    /// Records a problem at `line`.
    pub fn at(&mut self, line: usize, message: impl Into<String>) {
        self.push(Some(line), message);
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The problems in line order.
    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.list.iter()
    }

    /// `Ok(())` when nothing was found, else `Err(self)` sorted by line.
    pub fn into_result(mut self) -> Result<(), Problems> {
        if self.list.is_empty() {
            return Ok(());
        }
        self.list.sort_by_key(|p| p.line);
        Err(self)
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.list.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_by_line_whole_file_first() {
        let mut p = Problems::new(Path::new("/x.toml"));
        p.at(7, "late");
        p.push(None, "whole");
        p.at(2, "early");
        p.at(7, "same line, kept in order");
        let p = p.into_result().unwrap_err();
        assert_eq!(
            p.to_string(),
            "/x.toml: whole\n/x.toml, line 2: early\n/x.toml, line 7: late\n/x.toml, line 7: same line, kept in order"
        );
        assert!(Problems::new(Path::new("f")).into_result().is_ok());
    }
}
