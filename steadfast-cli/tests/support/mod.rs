//! What the CLI's test files share.

#![allow(dead_code, unreachable_pub)]

pub(crate) mod haproxy;
#[path = "../../../steadfast/tests/support/postgres.rs"]
pub(crate) mod postgres;
pub(crate) mod proc;
pub(crate) mod watched;

use std::path::PathBuf;

/// A temporary directory removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!(
            "steadfast-cli-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).expect("a temporary directory");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
