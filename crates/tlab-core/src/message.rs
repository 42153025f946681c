//! The unit every transport carries.

use bytes::Bytes;

/// Identifies one logical stream of a session. Valid ids are below 2^31 (the top bit of the wire field marks
/// control messages, see [`crate::frame`]).
pub type StreamId = u32;

/// The largest valid stream id.
pub const MAX_STREAM_ID: StreamId = 0x7FFF_FFFF;

/// Whether a message carries application data or a session-layer control operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Application payload; `seq` numbers the messages of one stream and direction from 0.
    Data,
    /// Session-layer control: the operation is the payload's first byte ([`ControlOp`]); `seq` is its argument.
    Control,
}

/// The session layer's control operations; each travels as a [`MessageKind::Control`] message whose `seq` is the
/// operation's argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ControlOp {
    /// Sent by the server when a resumable stream (re)opens: "the next data seq I expect from you is `seq`".
    Resume = 1,
    /// "I have received every data message below `seq`": the peer may forget them.
    Ack = 2,
    /// Heartbeat request; `seq` is a nonce.
    Ping = 3,
    /// Heartbeat answer carrying the ping's nonce.
    Pong = 4,
    /// Sent by the server instead of `Resume` when a stream reopens (`reopen=1`) for a session it does not know
    /// (restarted, or the resume window passed); the server then ends the stream. `seq` is 0.
    UnknownSession = 5,
}

impl ControlOp {
    /// Parses the operation byte of a control message.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Resume),
            2 => Some(Self::Ack),
            3 => Some(Self::Ping),
            4 => Some(Self::Pong),
            5 => Some(Self::UnknownSession),
            _ => None,
        }
    }
}

/// One message on one logical stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The logical stream it belongs to.
    pub stream: StreamId,
    /// Data: position in the stream (per direction, from 0). Control: the operation's argument.
    pub seq: u64,
    /// CLOCK_MONOTONIC nanoseconds taken just before the send call ([`crate::clock::monotonic_ns`]).
    pub sent_at: u64,
    /// Data or control.
    pub kind: MessageKind,
    /// Application bytes (data) or the control operation byte (control).
    pub payload: Bytes,
}

impl Message {
    /// A data message stamped with the current monotonic time.
    pub fn data(stream: StreamId, seq: u64, payload: Bytes) -> Self {
        Self { stream, seq, sent_at: crate::clock::monotonic_ns(), kind: MessageKind::Data, payload }
    }

    /// A control message stamped with the current monotonic time.
    pub fn control(stream: StreamId, op: ControlOp, argument: u64) -> Self {
        Self {
            stream,
            seq: argument,
            sent_at: crate::clock::monotonic_ns(),
            kind: MessageKind::Control,
            payload: Bytes::copy_from_slice(&[op as u8]),
        }
    }

    /// The control operation, if this is a well-formed control message.
    pub fn control_op(&self) -> Option<ControlOp> {
        match self.kind {
            MessageKind::Control => self.payload.first().copied().and_then(ControlOp::from_byte),
            MessageKind::Data => None,
        }
    }

    /// True for application data.
    pub fn is_data(&self) -> bool {
        self.kind == MessageKind::Data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_round_trips_its_operation() {
        for op in [ControlOp::Resume, ControlOp::Ack, ControlOp::Ping, ControlOp::Pong, ControlOp::UnknownSession] {
            let msg = Message::control(7, op, 42);
            assert_eq!(msg.control_op(), Some(op));
            assert_eq!(msg.seq, 42);
            assert!(!msg.is_data());
        }
    }

    #[test]
    fn data_has_no_control_op() {
        let msg = Message::data(1, 0, Bytes::from_static(&[1]));
        assert_eq!(msg.control_op(), None);
        assert!(msg.is_data());
    }

    #[test]
    fn unknown_control_byte_is_rejected() {
        assert_eq!(ControlOp::from_byte(0), None);
        assert_eq!(ControlOp::from_byte(9), None);
    }
}
