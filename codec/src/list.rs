//! Repeated fields (topic filters, reason codes, user properties, subscription identifiers)
//! without allocation.
//!
//! A decoded packet keeps the validated wire bytes and iterates over them on demand; a packet
//! built for encoding points at a slice the caller owns. Both are the same [`List`] type, so a
//! decoded packet can be re-encoded, compared or forwarded as is.

use core::fmt;

use crate::reason::ReasonCode;
use crate::types::{QoS, RetainHandling, SubscriptionOptions};
use crate::wire;

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// An element type that [`List`] can hold: it knows how to read itself from validated wire
/// bytes. Sealed: the codec defines every list it decodes.
pub trait ListItem<'a>: Copy + sealed::Sealed {
    /// Reads the next element from `rest`, advancing it; `None` at the end.
    ///
    /// The bytes were validated when the packet was decoded, so this never meets malformed
    /// input; if it did, it would end the iteration rather than panic.
    #[doc(hidden)]
    fn read_next(rest: &mut &'a [u8]) -> Option<Self>;
}

/// A repeated field: validated wire bytes from a decoded packet, or a caller's slice.
#[derive(Clone, Copy)]
pub struct List<'a, T> {
    repr: Repr<'a, T>,
}

#[derive(Clone, Copy)]
enum Repr<'a, T> {
    Wire(&'a [u8]),
    Slice(&'a [T]),
}

impl<'a, T: ListItem<'a>> List<'a, T> {
    /// A list over the caller's elements, for encoding.
    pub const fn new(items: &'a [T]) -> Self {
        List {
            repr: Repr::Slice(items),
        }
    }

    /// The empty list.
    pub const fn empty() -> Self {
        List::new(&[])
    }

    /// A list over wire bytes that the decoder has already validated.
    pub(crate) const fn from_wire(bytes: &'a [u8]) -> Self {
        List {
            repr: Repr::Wire(bytes),
        }
    }

    /// The elements, in wire order.
    pub fn iter(&self) -> Iter<'a, T> {
        Iter {
            repr: match self.repr {
                Repr::Wire(bytes) => Repr::Wire(bytes),
                Repr::Slice(items) => Repr::Slice(items),
            },
        }
    }

    /// The number of elements (a walk over the bytes for a decoded list).
    pub fn len(&self) -> usize {
        match self.repr {
            Repr::Slice(items) => items.len(),
            Repr::Wire(_) => self.iter().count(),
        }
    }

    /// Whether the list has no element.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl<'a, T: ListItem<'a>> Default for List<'a, T> {
    fn default() -> Self {
        List::empty()
    }
}

impl<'a, T: ListItem<'a>> IntoIterator for List<'a, T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<'a, T: ListItem<'a>> IntoIterator for &List<'a, T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

/// Lists are equal when their elements are, however each is stored.
impl<'a, T: ListItem<'a> + PartialEq> PartialEq for List<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<'a, T: ListItem<'a> + Eq> Eq for List<'a, T> {}

impl<'a, T: ListItem<'a> + fmt::Debug> fmt::Debug for List<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(feature = "defmt")]
impl<'a, T: ListItem<'a> + defmt::Format> defmt::Format for List<'a, T> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "[");
        for (i, item) in self.iter().enumerate() {
            if i > 0 {
                defmt::write!(f, ", ");
            }
            defmt::write!(f, "{}", item);
        }
        defmt::write!(f, "]");
    }
}

/// Iterator over a [`List`].
#[derive(Clone)]
pub struct Iter<'a, T> {
    repr: Repr<'a, T>,
}

impl<'a, T: ListItem<'a>> Iterator for Iter<'a, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        match &mut self.repr {
            Repr::Wire(rest) => T::read_next(rest),
            Repr::Slice(items) => {
                let (first, tail) = items.split_first()?;
                *items = tail;
                Some(*first)
            }
        }
    }
}

/// One topic filter of a SUBSCRIBE with its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SubscribeFilter<'a> {
    /// The topic filter, possibly a `$share/{group}/…` filter.
    pub filter: &'a str,
    /// The subscription options.
    pub options: SubscriptionOptions,
}

impl sealed::Sealed for SubscribeFilter<'_> {}
impl<'a> ListItem<'a> for SubscribeFilter<'a> {
    fn read_next(rest: &mut &'a [u8]) -> Option<Self> {
        let (after, filter) = wire::validated_utf8(rest)?;
        let (&byte, after) = after.split_first()?;
        *rest = after;
        Some(SubscribeFilter {
            filter,
            options: options_from_byte(byte),
        })
    }
}

/// The options byte's fields; the decoder has already refused reserved bits and values.
pub(crate) fn options_from_byte(byte: u8) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::from_bits(byte & 0b11).unwrap_or(QoS::AtMostOnce),
        no_local: byte & 0b0100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling: match (byte >> 4) & 0b11 {
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => RetainHandling::SendOnSubscribe,
        },
    }
}

/// UNSUBSCRIBE topic filters.
impl sealed::Sealed for &str {}
impl<'a> ListItem<'a> for &'a str {
    fn read_next(rest: &mut &'a [u8]) -> Option<Self> {
        let (after, filter) = wire::validated_utf8(rest)?;
        *rest = after;
        Some(filter)
    }
}

/// SUBACK and UNSUBACK reason codes. MQTT 3.1.1 SUBACK codes (0, 1, 2, 0x80) share their
/// values with 5.0's, so one reading serves both.
impl sealed::Sealed for ReasonCode {}
impl<'a> ListItem<'a> for ReasonCode {
    fn read_next(rest: &mut &'a [u8]) -> Option<Self> {
        let (&byte, after) = rest.split_first()?;
        *rest = after;
        ReasonCode::from_u8(byte)
    }
}
