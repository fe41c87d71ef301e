//! A flag file that exists while a probe is saturated (as the
//! backlog_reporter gem does for Puma's backlog), so a web server in front
//! can shed load before it even reaches floodwall:
//!
//! ```nginx
//! location / {
//!     if (-f /run/floodwall/saturated.flag) { return 503; }
//!     proxy_pass http://127.0.0.1:8080;
//! }
//! ```
//!
//! The file holds one line saying why, for a human who finds it. It is
//! written only when the state changes, and removed when floodwall stops,
//! so a stopped floodwall never leaves the web server answering 503.

use std::io;
use std::path::{Path, PathBuf};

/// One flag file and what floodwall last made of it.
#[derive(Debug)]
pub struct FlagFile {
    path: PathBuf,
    /// `None` until the first [`FlagFile::set`], so a flag left behind by a
    /// crashed run is cleared by the first healthy reading.
    raised: Option<bool>,
}

impl FlagFile {
    /// A flag at `path`; nothing is touched until [`FlagFile::set`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            raised: None,
        }
    }

    /// Where the flag lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the flag is raised, as far as floodwall knows.
    pub fn is_raised(&self) -> bool {
        self.raised == Some(true)
    }

    /// Raises (creates, with `why` as its content) or lowers (removes) the
    /// flag. Does nothing when it is already in that state, so it costs no
    /// I/O per interval. On an error the state is not recorded, so the next
    /// call tries again.
    ///
    /// The calls are plain blocking file operations: they happen only on a
    /// change of state, on a probe's own task, and take microseconds on a
    /// local file system.
    pub fn set(&mut self, raise: bool, why: &str) -> io::Result<()> {
        if self.raised == Some(raise) {
            return Ok(());
        }
        if raise {
            // Written beside and renamed, so the file never exists half
            // written.
            let tmp = self.path.with_extension("floodwall-tmp");
            std::fs::write(&tmp, format!("{why}\n"))?;
            std::fs::rename(&tmp, &self.path)?;
        } else {
            match std::fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.raised = Some(raise);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_lowers_and_clears_a_stale_flag() {
        let dir = std::env::temp_dir().join(format!("floodwall-flag-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("saturated.flag");
        std::fs::write(&path, "left by a crashed run\n").unwrap();

        let mut flag = FlagFile::new(&path);
        flag.set(false, "").unwrap();
        assert!(!path.exists(), "a stale flag is cleared");
        flag.set(true, "backlog=20 max=16").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "backlog=20 max=16\n"
        );
        assert!(flag.is_raised());
        // Raising again is a no-op, even if someone removed the file.
        std::fs::remove_file(&path).unwrap();
        flag.set(true, "x").unwrap();
        assert!(!path.exists());
        flag.set(false, "").unwrap();
        flag.set(true, "again").unwrap();
        assert!(path.exists());
        flag.set(false, "").unwrap();
        assert!(!path.exists());

        let mut nowhere = FlagFile::new(dir.join("missing-dir/x.flag"));
        assert!(nowhere.set(true, "x").is_err());
        assert!(!nowhere.is_raised());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
