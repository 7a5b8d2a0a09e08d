//! What `send --state` consumed of its input: checkpoints of (records read, checksum of those
//! records) in `STATE/input-consumed`. A later run with the same state directory skips the
//! records earlier runs sent; before it skips them it checks them against the checkpoints, so
//! that a different input is refused instead of being silently skipped in part.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A checkpoint every this many records.
const EVERY: u64 = 1_024;
/// The file's first line.
const HEADER: &str = "steadfast send --state input checkpoints v1";

/// The checkpoints of one input: read from the last run, and made anew as this run reads.
#[derive(Debug)]
pub(crate) struct Consumed {
    path: PathBuf,
    /// The last run's checkpoints: (records, checksum), ascending.
    earlier: Vec<(u64, u64)>,
    /// This run's.
    now: Vec<(u64, u64)>,
    count: u64,
    hash: u64,
    /// The input was found to differ: nothing of this run is saved.
    differs: bool,
}

/// FNV-1a, 64 bits: a checksum that stays the same across builds (it is stored).
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

impl Consumed {
    /// Reads the checkpoints kept in `dir` (none yet: an empty list).
    pub(crate) fn open(dir: &Path) -> Result<Consumed, String> {
        let path = dir.join("input-consumed");
        let mut earlier = Vec::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut lines = text.lines();
                if lines.next() != Some(HEADER) {
                    return Err(format!("{} is not a checkpoint file", path.display()));
                }
                for l in lines {
                    let mut w = l.split_whitespace();
                    let parsed = (|| {
                        let n = w.next()?.parse().ok()?;
                        let h = u64::from_str_radix(w.next()?, 16).ok()?;
                        Some((n, h))
                    })();
                    let Some(p) = parsed else {
                        return Err(format!("{} is damaged: {l:?}", path.display()));
                    };
                    earlier.push(p);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
        Ok(Consumed {
            path,
            earlier,
            now: Vec::new(),
            count: 0,
            hash: FNV_START,
            differs: false,
        })
    }

    /// Counts one more record read. A record being skipped (`skipping`: an earlier run sent
    /// it) is checked against the earlier checkpoints.
    pub(crate) fn add(&mut self, record: &[u8], skipping: bool) -> Result<(), String> {
        self.hash = fnv(self.hash, &(record.len() as u64).to_le_bytes());
        self.hash = fnv(self.hash, record);
        self.count += 1;
        if skipping
            && let Ok(i) = self.earlier.binary_search_by_key(&self.count, |(n, _)| *n)
            && self.earlier[i].1 != self.hash
        {
            self.differs = true;
            return Err(format!(
                "the input differs from the one earlier runs with this --state read: its \
                 first {} records do not match; refusing to skip them (use the same input, or \
                 another --state directory)",
                self.count
            ));
        }
        if self.count % EVERY == 0 {
            self.now.push((self.count, self.hash));
        }
        Ok(())
    }

    /// Writes this run's checkpoints (a new file renamed over the old one).
    pub(crate) fn save(&self) -> Result<(), String> {
        if self.differs {
            return Ok(());
        }
        // This run's, with one where it stopped reading; a run that read less than an earlier
        // one keeps the earlier checkpoints beyond it.
        let mut all = self.now.clone();
        if self.count > 0 && self.count % EVERY != 0 {
            all.push((self.count, self.hash));
        }
        all.extend(self.earlier.iter().filter(|(n, _)| *n > self.count));
        let tmp = self.path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{HEADER}")?;
            for (n, h) in &all {
                writeln!(f, "{n} {h:016x}")?;
            }
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}
