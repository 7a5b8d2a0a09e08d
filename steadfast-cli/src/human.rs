//! Numbers and durations as the command line prints them, one way everywhere: counts with
//! thousands separators and the right plural, durations rounded to a readable unit.

use std::time::Duration;

/// 1234567 → "1,234,567".
pub(crate) fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "1 message", "2,000 messages".
pub(crate) fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{} {word}s", count(n))
    }
}

/// 46.262451 ms → "46 ms"; 2.5 ms → "2.5 ms"; 180 µs → "180 µs"; 3.2 s → "3.2 s".
pub(crate) fn duration(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 10_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else if us < 1_000_000 {
        format!("{} ms", (us + 500) / 1_000)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn one_format_for_counts_and_durations() {
        assert_eq!(super::count(0), "0");
        assert_eq!(super::count(999), "999");
        assert_eq!(super::count(1_000), "1,000");
        assert_eq!(super::count(1_234_567), "1,234,567");
        assert_eq!(super::plural(1, "message"), "1 message");
        assert_eq!(super::plural(20_000, "message"), "20,000 messages");
        assert_eq!(super::duration(Duration::from_micros(180)), "180 µs");
        assert_eq!(super::duration(Duration::from_micros(2_500)), "2.5 ms");
        assert_eq!(super::duration(Duration::from_nanos(46_262_451)), "46 ms");
        assert_eq!(super::duration(Duration::from_millis(3_200)), "3.2 s");
    }
}
