//! Where a received frame's payload goes when it leaves the read buffer.
//!
//! A payload is copied out of the read buffer, so that a message kept in an inbox or by the
//! application never pins the buffer it arrived in. Small payloads get an allocation each:
//! the allocator's per-thread caches serve them cheaply. Middling ones (512 B to 8 KiB) are
//! where one allocation per payload costs the most: past those caches, the receiving side
//! allocating and the application freeing whole batches of them made the allocator grow and
//! trim its heap in turn, a page fault per few messages (`steadfast bench throughput --size
//! 1024`: 433,102 page faults for 2,000,000 messages, BENCHMARKS.md). So payloads of that
//! size are copied one after another into a shared allocation, a *slab*, sized to what the
//! read holds but never more than [`PIN_RATIO`] times any payload in it nor [`SLAB_MAX`]
//! bytes: a body kept alone keeps at most that much memory alive. A slab whose payloads have
//! all been dropped is filled again instead of a new one being allocated.
//!
//! What slabs hold beyond their payloads is bounded too. A slab that still holds payloads is
//! replaced only by a payload larger than the room it has left, so the room it leaves unused
//! is smaller than a payload copied after it; a payload too small for the slab (the slab
//! would be more than [`PIN_RATIO`] times its size) gets memory of its own instead. So
//! slabs take at most twice the bytes of the payloads copied into them, plus the current
//! slab's room.

use bytes::{Bytes, BytesMut};

/// Payloads smaller than this get an allocation each.
pub(crate) const SHARE_MIN: usize = 512;
/// Payloads larger than this get an allocation each.
pub(crate) const SHARE_MAX: usize = 8 << 10;
/// A slab is at most this many times the size of any payload copied into it.
pub(crate) const PIN_RATIO: usize = 16;
/// A slab is at most this many bytes.
pub(crate) const SLAB_MAX: usize = 32 << 10;

/// Whether a payload of `len` bytes goes into a slab.
pub(crate) fn shares(len: usize) -> bool {
    (SHARE_MIN..=SHARE_MAX).contains(&len)
}

/// The allocation payloads are copied into.
#[derive(Debug, Default)]
pub(crate) struct Slab {
    /// The slab's unused room (its filled part is split off as each payload is copied).
    room: BytesMut,
    /// The size of the slab `room` belongs to (0: none yet).
    size: u32,
    /// Bytes of all the slabs made (tests).
    #[cfg(test)]
    made: usize,
}

impl Slab {
    /// `payload` in memory of its own, or shared only with payloads copied just before or
    /// after it. `ahead` is how many bytes the read holds from the payload's start on,
    /// itself included: a new slab is no larger than that.
    pub(crate) fn copy(&mut self, payload: &[u8], ahead: usize) -> Bytes {
        let len = payload.len();
        if !shares(len) {
            return Bytes::copy_from_slice(payload);
        }
        let in_ratio = (self.size as usize) <= PIN_RATIO * len;
        let fits = in_ratio && (self.room.capacity() >= len || self.room.try_reclaim(len));
        if !fits {
            // Too small for a slab that still holds payloads: memory of its own, the slab's
            // room stays for the payloads that fit its ratio. Otherwise the slab is full for
            // this payload (its room is smaller) or free, and a new one is made.
            if !in_ratio && !self.room.try_reclaim(self.size as usize) {
                return Bytes::copy_from_slice(payload);
            }
            let size = (PIN_RATIO * len).min(SLAB_MAX).min(ahead).max(len);
            self.room = BytesMut::with_capacity(size);
            // At most `SLAB_MAX`, so it fits.
            self.size = size as u32;
            #[cfg(test)]
            {
                self.made += size;
            }
        }
        self.room.extend_from_slice(payload);
        self.room.split().freeze()
    }

    /// The size of the current slab (0: none).
    #[cfg(test)]
    pub(crate) fn size(&self) -> usize {
        self.size as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `b` starts where `a` ends: copied into one slab, one after the other.
    fn adjacent(a: &Bytes, b: &Bytes) -> bool {
        a.as_ptr().wrapping_add(a.len()) == b.as_ptr()
    }

    #[test]
    fn middling_payloads_of_one_read_share_a_slab_sized_to_the_read() {
        let mut slab = Slab::default();
        let payload = vec![7u8; 1_040];
        let read = 4 * payload.len() + 100;
        let bodies: Vec<Bytes> = (0..4)
            .map(|i| slab.copy(&payload, read - i * payload.len()))
            .collect();
        assert_eq!(slab.size(), read, "a slab no larger than the read");
        for pair in bodies.windows(2) {
            assert!(adjacent(&pair[0], &pair[1]));
            assert!(!pair[0].is_unique(), "shares its allocation");
        }
        assert!(bodies.iter().all(|b| b[..] == payload[..]));
    }

    #[test]
    fn a_slab_is_at_most_sixteen_times_a_payload_and_32_kib() {
        let mut slab = Slab::default();
        for len in [SHARE_MIN, 1_000, 2_048, 4_096, SHARE_MAX] {
            let payload = vec![1u8; len];
            let mut kept = Vec::new();
            for _ in 0..100 {
                let body = slab.copy(&payload, 1 << 20);
                assert!(slab.size() <= PIN_RATIO * len && slab.size() <= SLAB_MAX);
                assert!(slab.size() >= len);
                kept.push(body);
            }
        }
        // A smaller payload after larger ones does not go into their larger slab: while
        // they live it gets memory of its own, and the slab stays for its kind.
        let big = slab.copy(&[2u8; SHARE_MAX], 1 << 20);
        let small = slab.copy(&[3u8; SHARE_MIN], 1 << 20);
        assert!(small.is_unique(), "an allocation of its own");
        assert_eq!(slab.size(), SLAB_MAX);
        let big2 = slab.copy(&[2u8; SHARE_MAX], 1 << 20);
        assert!(adjacent(&big, &big2));
        // Once they are gone, the next small one gets a slab its size.
        drop((big, big2));
        let small2 = slab.copy(&[3u8; SHARE_MIN], 1 << 20);
        assert!(!small2.is_unique());
        assert_eq!(slab.size(), PIN_RATIO * SHARE_MIN);
    }

    /// Every payload kept (an inbox nobody takes from): the slabs made hold at most twice
    /// the payloads copied into them plus the last slab, whatever the sizes and reads.
    #[test]
    fn slabs_hold_at_most_twice_their_payloads_plus_one_slab() {
        proptest::proptest!(|(sizes in proptest::collection::vec((1usize..12_000, 0usize..70_000), 1..400))| {
            let mut slab = Slab::default();
            let mut kept = Vec::new();
            let mut shared = 0;
            for (len, extra) in sizes {
                let payload = vec![0u8; len];
                let body = slab.copy(&payload, len + extra);
                proptest::prop_assert_eq!(body.len(), len);
                if !body.is_unique() {
                    shared += len;
                }
                proptest::prop_assert!(slab.size() <= SLAB_MAX);
                kept.push(body);
            }
            proptest::prop_assert!(
                slab.made <= 2 * shared + slab.size(),
                "{} bytes of slabs for {} bytes of payloads",
                slab.made,
                shared
            );
        });
    }

    #[test]
    fn small_and_large_payloads_get_an_allocation_each() {
        let mut slab = Slab::default();
        for len in [1, 64, SHARE_MIN - 1, SHARE_MAX + 1, 64 << 10] {
            let payload = vec![9u8; len];
            let a = slab.copy(&payload, 1 << 20);
            let b = slab.copy(&payload, 1 << 20);
            assert!(a.is_unique() && b.is_unique(), "{len} bytes: not shared");
            assert_eq!(&a[..], &payload[..]);
        }
        assert_eq!(slab.size(), 0, "no slab made");
    }

    #[test]
    fn a_slab_whose_payloads_were_dropped_is_filled_again() {
        let mut slab = Slab::default();
        let payload = vec![5u8; 2_000];
        let first = slab.copy(&payload, 8_000);
        let start = first.as_ptr();
        let rest: Vec<Bytes> = (0..3).map(|_| slab.copy(&payload, 8_000)).collect();
        drop((first, rest));
        let again = slab.copy(&payload, 8_000);
        assert_eq!(again.as_ptr(), start, "the same memory, not a new slab");
        // While a payload of it lives, a full slab is replaced instead.
        let held: Vec<Bytes> = (0..3).map(|_| slab.copy(&payload, 8_000)).collect();
        let next = slab.copy(&payload, 8_000);
        assert!(!std::ptr::eq(next.as_ptr(), start));
        assert_eq!(&next[..], &payload[..]);
        drop((again, held));
    }

    #[test]
    fn a_slab_dropped_lives_on_in_its_payloads() {
        let mut slab = Slab::default();
        let body = slab.copy(&[4u8; 1_500], 3_000);
        assert!(!body.is_unique());
        drop(slab);
        assert!(body.is_unique(), "the payload alone holds the slab now");
        assert_eq!(&body[..], &[4u8; 1_500][..]);
    }
}
