//! The count of open streams of one connection against [`Limits::max_streams`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tlab_core::{Error, Limits, StreamId};

/// The open streams of one connection (one counter, shared by every [`StreamSlot`] taken from it).
#[derive(Debug, Default, Clone)]
pub struct StreamSlots(Arc<AtomicUsize>);

impl StreamSlots {
    /// Counts `stream` as open, or refuses it with [`Error::TooManyStreams`] when `limits.max_streams` are open
    /// already. The check and the count are one atomic step, so concurrent openers cannot both take the last slot.
    pub fn acquire(&self, limits: &Limits, stream: StreamId) -> Result<StreamSlot, Error> {
        let before = self.0.fetch_add(1, Ordering::AcqRel);
        // Made before the check so that a refusal gives the count back when it is dropped.
        let slot = StreamSlot { open: self.0.clone(), opened_beside: u32::try_from(before).unwrap_or(u32::MAX) };
        limits.check_streams(stream, before)?;
        Ok(slot)
    }

    /// How many streams are open now.
    pub fn open(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One open stream, counted until it is dropped.
#[derive(Debug)]
pub struct StreamSlot {
    open: Arc<AtomicUsize>,
    opened_beside: u32,
}

impl StreamSlot {
    /// How many streams were already open when this one opened: the limit the peer hit if it refuses this stream.
    pub fn opened_beside(&self) -> u32 {
        self.opened_beside
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_refuse_at_the_limit_and_release() {
        let slots = StreamSlots::default();
        let limits = Limits { max_message_size: 1, max_streams: 2 };
        let first = slots.acquire(&limits, 0).unwrap();
        let second = slots.acquire(&limits, 1).unwrap();
        assert_eq!((first.opened_beside(), second.opened_beside()), (0, 1));
        assert!(matches!(slots.acquire(&limits, 2), Err(Error::TooManyStreams { stream: 2, limit: 2 })));
        assert_eq!(slots.open(), 2, "a refused stream gives its count back");
        drop(first);
        let third = slots.acquire(&limits, 3).unwrap();
        assert_eq!(third.opened_beside(), 1);
        drop((second, third));
        assert_eq!(slots.open(), 0);
    }

    #[test]
    fn clones_share_one_count() {
        let slots = StreamSlots::default();
        let limits = Limits { max_message_size: 1, max_streams: 1 };
        let _held = slots.clone().acquire(&limits, 0).unwrap();
        assert!(matches!(slots.acquire(&limits, 1), Err(Error::TooManyStreams { stream: 1, limit: 1 })));
    }
}
