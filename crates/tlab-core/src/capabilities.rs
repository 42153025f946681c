//! What a transport can do, as data ([`Capabilities`], printed by `tlab list`), and the single capabilities a caller
//! can ask for by name ([`Requirement`]: suites' capability groups, the registry's `select`).

use serde::Serialize;

/// Capabilities of one transport mode. A transport never fakes one: asking for something it lacks is
/// [`crate::Error::Unsupported`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Both client→server and server→client messages on one stream.
    pub bidirectional: bool,
    /// Several logical streams share one connection.
    pub multiplexed: bool,
    /// Every message is delivered (or the connection fails).
    pub reliable: bool,
    /// Messages of one stream arrive in order.
    pub ordered: bool,
    /// Unreliable datagrams.
    pub datagrams: bool,
    /// The connection survives a client address change by itself.
    pub native_migration: bool,
    /// The protocol reconnects and resumes by itself (e.g. SSE's Last-Event-ID).
    pub native_reconnect: bool,
}

/// One capability a caller can require of a transport mode, by name: what a suite's capability group
/// (`transports = ["reliable"]`) and the registry's `select` filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// [`Capabilities::bidirectional`]; written `bidirectional`.
    Bidirectional,
    /// [`Capabilities::multiplexed`]; written `multiplexed`.
    Multiplexed,
    /// [`Capabilities::reliable`]; written `reliable`.
    Reliable,
    /// [`Capabilities::ordered`]; written `ordered`.
    Ordered,
    /// [`Capabilities::datagrams`]; written `datagram`.
    Datagram,
    /// [`Capabilities::native_migration`]; written `native-migration`.
    NativeMigration,
    /// [`Capabilities::native_reconnect`]; written `native-reconnect`.
    NativeReconnect,
}

impl Requirement {
    /// Every requirement, in the order of [`Capabilities`]' fields.
    pub const ALL: [Self; 7] = [
        Self::Bidirectional,
        Self::Multiplexed,
        Self::Reliable,
        Self::Ordered,
        Self::Datagram,
        Self::NativeMigration,
        Self::NativeReconnect,
    ];

    /// The name in suites and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bidirectional => "bidirectional",
            Self::Multiplexed => "multiplexed",
            Self::Reliable => "reliable",
            Self::Ordered => "ordered",
            Self::Datagram => "datagram",
            Self::NativeMigration => "native-migration",
            Self::NativeReconnect => "native-reconnect",
        }
    }
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a [`Requirement`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability `{0}` (expected one of bidirectional, multiplexed, reliable, ordered, datagram, native-migration, native-reconnect)")]
pub struct UnknownRequirement(pub String);

impl std::str::FromStr for Requirement {
    type Err = UnknownRequirement;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| UnknownRequirement(s.to_string()))
    }
}

impl Capabilities {
    /// No capability at all: the base of a struct-update literal, `Capabilities { reliable: true, ..Capabilities::NONE }`.
    pub const NONE: Self = Self {
        bidirectional: false,
        multiplexed: false,
        reliable: false,
        ordered: false,
        datagrams: false,
        native_migration: false,
        native_reconnect: false,
    };

    /// True when this mode has the capability `requirement` names.
    pub fn satisfies(&self, requirement: Requirement) -> bool {
        match requirement {
            Requirement::Bidirectional => self.bidirectional,
            Requirement::Multiplexed => self.multiplexed,
            Requirement::Reliable => self.reliable,
            Requirement::Ordered => self.ordered,
            Requirement::Datagram => self.datagrams,
            Requirement::NativeMigration => self.native_migration,
            Requirement::NativeReconnect => self.native_reconnect,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each requirement beside a mode that has only that capability, written out field by field.
    fn only_one() -> [(Requirement, Capabilities); 7] {
        [
            (Requirement::Bidirectional, Capabilities { bidirectional: true, ..Capabilities::NONE }),
            (Requirement::Multiplexed, Capabilities { multiplexed: true, ..Capabilities::NONE }),
            (Requirement::Reliable, Capabilities { reliable: true, ..Capabilities::NONE }),
            (Requirement::Ordered, Capabilities { ordered: true, ..Capabilities::NONE }),
            (Requirement::Datagram, Capabilities { datagrams: true, ..Capabilities::NONE }),
            (Requirement::NativeMigration, Capabilities { native_migration: true, ..Capabilities::NONE }),
            (Requirement::NativeReconnect, Capabilities { native_reconnect: true, ..Capabilities::NONE }),
        ]
    }

    #[test]
    fn each_requirement_reads_exactly_its_own_field() {
        for (set, caps) in only_one() {
            for asked in Requirement::ALL {
                assert_eq!(caps.satisfies(asked), asked == set, "{set} set, {asked} asked");
            }
            assert!(!Capabilities::NONE.satisfies(set), "{set} on a mode without capabilities");
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for r in Requirement::ALL {
            assert_eq!(r.to_string().parse::<Requirement>(), Ok(r));
        }
        assert_eq!("datagram".parse::<Requirement>(), Ok(Requirement::Datagram));
        assert_eq!("native-migration".parse::<Requirement>(), Ok(Requirement::NativeMigration));
        for bad in ["Reliable", "datagrams", "native_migration", "", "all"] {
            assert_eq!(bad.parse::<Requirement>(), Err(UnknownRequirement(bad.to_string())), "{bad}");
        }
    }
}
