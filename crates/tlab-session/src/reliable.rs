//! Sans-IO bookkeeping of one direction pair of a resumable stream: what was received (dedup, acks) and what was
//! sent but not yet acknowledged (retransmission after a reconnect). Used by both ends of the session layer.

use std::collections::VecDeque;

use tlab_core::message::Message;

/// Acknowledge after this many new data messages (acks are also sent with every heartbeat).
pub const ACK_EVERY: u64 = 32;

/// What to do with an incoming data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// The next one expected: deliver it.
    Deliver,
    /// Already delivered before (a retransmission after resume): drop it.
    Duplicate,
    /// Messages are missing before it: the peer broke the protocol.
    Gap {
        /// The seq that was expected.
        expected: u64,
    },
}

/// Receive and retransmission state of one resumable stream.
#[derive(Debug, Default)]
pub struct ReliableState {
    next_expected: u64,
    last_acked_sent: u64,
    next_send_seq: u64,
    unacked: VecDeque<Message>,
}

impl ReliableState {
    /// A stream where nothing has happened yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next data seq expected from the peer (everything below it was delivered).
    pub fn next_expected(&self) -> u64 {
        self.next_expected
    }

    /// The seq the next outgoing data message gets.
    pub fn next_send_seq(&self) -> u64 {
        self.next_send_seq
    }

    /// Messages sent and not acknowledged yet.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Classifies an incoming data seq, advancing on [`Incoming::Deliver`].
    pub fn on_data(&mut self, seq: u64) -> Incoming {
        if seq < self.next_expected {
            Incoming::Duplicate
        } else if seq == self.next_expected {
            self.next_expected += 1;
            Incoming::Deliver
        } else {
            Incoming::Gap { expected: self.next_expected }
        }
    }

    /// An ack to send now, if enough has arrived since the last one.
    pub fn ack_due(&mut self) -> Option<u64> {
        (self.next_expected >= self.last_acked_sent + ACK_EVERY).then(|| self.ack_now())
    }

    /// The ack value to send now (with a heartbeat or at resume), recording it as sent.
    pub fn ack_now(&mut self) -> u64 {
        self.last_acked_sent = self.next_expected;
        self.next_expected
    }

    /// Records an outgoing data message (keeps a copy until acknowledged) and returns its seq.
    pub fn record_sent(&mut self, msg: &Message) -> u64 {
        debug_assert_eq!(msg.seq, self.next_send_seq);
        self.next_send_seq = msg.seq + 1;
        self.unacked.push_back(msg.clone());
        msg.seq
    }

    /// The peer has everything below `next_expected_by_peer`: forget it.
    pub fn on_ack(&mut self, next_expected_by_peer: u64) {
        while self.unacked.front().is_some_and(|m| m.seq < next_expected_by_peer) {
            self.unacked.pop_front();
        }
    }

    /// After a reconnect the peer said what it expects next: forget what it has, return what it lacks, in order.
    pub fn resume(&mut self, next_expected_by_peer: u64) -> Vec<Message> {
        self.on_ack(next_expected_by_peer);
        self.unacked.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(seq: u64) -> Message {
        Message::data(0, seq, Bytes::from(seq.to_be_bytes().to_vec()))
    }

    #[test]
    fn dedup_and_gap() {
        let mut state = ReliableState::new();
        assert_eq!(state.on_data(0), Incoming::Deliver);
        assert_eq!(state.on_data(1), Incoming::Deliver);
        assert_eq!(state.on_data(1), Incoming::Duplicate);
        assert_eq!(state.on_data(0), Incoming::Duplicate);
        assert_eq!(state.on_data(3), Incoming::Gap { expected: 2 });
        assert_eq!(state.next_expected(), 2);
    }

    #[test]
    fn resume_returns_exactly_the_unacked_suffix() {
        let mut state = ReliableState::new();
        for seq in 0..10 {
            state.record_sent(&msg(seq));
        }
        state.on_ack(3);
        assert_eq!(state.unacked_len(), 7);
        let resend: Vec<u64> = state.resume(6).iter().map(|m| m.seq).collect();
        assert_eq!(resend, vec![6, 7, 8, 9]);
        assert_eq!(state.next_send_seq(), 10);
    }

    #[test]
    fn acks_are_due_every_ack_every_messages() {
        let mut state = ReliableState::new();
        let mut acks = Vec::new();
        for seq in 0..(ACK_EVERY * 3) {
            state.on_data(seq);
            acks.extend(state.ack_due());
        }
        assert_eq!(acks, vec![ACK_EVERY, 2 * ACK_EVERY, 3 * ACK_EVERY]);
    }

    #[test]
    fn lossy_reconnects_deliver_exactly_once_in_order() {
        // Simulates a sender and a receiver whose link drops a suffix of each burst, then resumes.
        let mut sender = ReliableState::new();
        let mut receiver = ReliableState::new();
        let mut delivered = Vec::new();
        let mut in_flight: Vec<Message> = Vec::new();
        for burst in 0..20u64 {
            for _ in 0..7 {
                let m = msg(sender.next_send_seq());
                sender.record_sent(&m);
                in_flight.push(m);
            }
            let survivors = (burst as usize * 3) % in_flight.len().max(1);
            for m in in_flight.drain(..).take(survivors) {
                if receiver.on_data(m.seq) == Incoming::Deliver {
                    delivered.push(m.seq);
                }
            }
            // connection dies; on reconnect the receiver announces what it expects
            in_flight = sender.resume(receiver.next_expected());
        }
        for m in in_flight {
            if receiver.on_data(m.seq) == Incoming::Deliver {
                delivered.push(m.seq);
            }
        }
        assert_eq!(delivered, (0..140).collect::<Vec<_>>());
    }
}
