//! `--max-message SIZE`: a number of bytes with an optional `KiB`, `MiB` or `GiB` suffix.

use steadfast::proto;

/// The default largest message: the protocol's own default, 16 MiB.
pub(crate) const DEFAULT_MAX_MESSAGE: u32 = 16 << 20;

/// Parses a size such as `300MiB`, `64KiB`, `1GiB` or `1048576` (bytes), from 1 to 4 GiB − 1.
pub(crate) fn parse_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use a number of bytes, or KiB, MiB, GiB"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 300MiB)"))?;
    let bytes = n
        .checked_mul(1 << shift)
        .filter(|b| (1..=u64::from(u32::MAX)).contains(b))
        .ok_or_else(|| format!("{s:?} is outside 1 byte ..= 4 GiB − 1 (4294967295 bytes)"))?;
    Ok(bytes as u32)
}

/// Protocol settings for messages up to `max` bytes: the outbox holds at least one of them
/// (so `--max-message` needs no other option).
pub(crate) fn protocol(base: proto::Config, max: u32) -> proto::Config {
    let outbox_bytes = (32u64 << 20).max(u64::from(max));
    base.max_message(max).outbox(16_384, outbox_bytes)
}

/// A server's memory budget for messages up to `max` bytes: the default 1 GiB, or room for
/// four of them (a message being reassembled is counted by its buffer's capacity, which grows
/// by doubling, and a large decode reserves one more).
pub(crate) fn memory_budget(max: u32) -> u64 {
    (1u64 << 30).max(4 * u64::from(max))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("300MiB"), Ok(300 << 20));
        assert_eq!(parse_size("3GiB"), Ok(3 << 30));
        assert_eq!(parse_size("4294967295"), Ok(u32::MAX));
        for bad in ["0", "4GiB", "4294967296", "12MB", "MiB", "-1", "1.5MiB", ""] {
            assert!(parse_size(bad).is_err(), "{bad} accepted");
        }
    }
}
