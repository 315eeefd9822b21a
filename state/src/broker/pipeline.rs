//! Pipelines: where a client's publish goes besides (or instead of) the local subscribers,
//! with the publisher's acknowledgement held until the pipeline has it safe.
//!
//! The broker offers every publish it accepted from a client (after the hooks allowed it) to
//! the [`Pipeline`], if one is set. A QoS 1/2 publish comes with a [`PipelineTicket`]: when
//! the pipeline takes it, the broker holds that PUBACK / PUBREC until the runtime reports
//! [`Broker::pipeline_done`](super::Broker::pipeline_done) with the ticket — for the Kafka
//! bridge, once Kafka acknowledged the record. This is the same kind of barrier as the
//! store's [`Durability::Pending`](super::Durability::Pending), and independent of it: a
//! completion is handled like an input, so the acknowledgement it releases still waits for
//! the store when the store is slower.
//!
//! Backpressure needs no extra machinery: held acknowledgements count against the client's
//! inbound window (its Receive Maximum over 5.0; over 3.1.1 the broker stops reading from
//! it), so a publisher whose records wait for the pipeline slows down instead of piling
//! messages up. A pipeline that is full answers [`Offer::Full`]: QoS 0 publishes are
//! dropped (the pipeline counts them), QoS 1/2 ones are refused with 0x97 "quota exceeded"
//! — which only 5.0 can say, so a 3.1.1 publisher's QoS 1/2 publish is offered with
//! `must_take` and the pipeline takes it over its bound (its inbound window bounds how
//! many such a client can have waiting).

use alloc::sync::Arc;

use crate::message::Message;

use super::ClientInfo;

/// Names one held acknowledgement; given back in
/// [`Broker::pipeline_done`](super::Broker::pipeline_done).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PipelineTicket(pub u64);

/// What a pipeline did with an offered publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Not the pipeline's: the broker routes it as usual.
    Pass,
    /// Taken. With a ticket, the publisher's acknowledgement waits for
    /// [`Broker::pipeline_done`](super::Broker::pipeline_done). `local`: whether the local
    /// subscribers get it too (a bridge's "broker mode"), or only the pipeline does
    /// ("pipeline mode": neither routed nor retained here).
    Taken {
        /// Route to local subscribers as well.
        local: bool,
    },
    /// The pipeline's, but it has no room. A QoS 0 publish is dropped from the pipeline
    /// (it counts the drop) and still routed locally if `local`; a QoS 1/2 publish is
    /// refused with 0x97 and routed nowhere, so the publisher knows to try again.
    Full {
        /// Route a dropped QoS 0 publish to local subscribers anyway.
        local: bool,
    },
}

/// Takes publishes out of the broker, such as to Kafka. Runs inside the broker's
/// single-threaded core: it must not block (hand the message to another thread).
pub trait Pipeline {
    /// A client published `message` and the hooks allowed it. `ticket` is set for QoS 1/2:
    /// taking the message then holds the publisher's acknowledgement until
    /// `pipeline_done(ticket)`. `must_take` is set when the publisher cannot be refused
    /// (QoS 1/2 over MQTT 3.1.1): answer `Taken` even over the pipeline's bound.
    fn offer(
        &mut self,
        publisher: &ClientInfo<'_>,
        message: &Arc<Message>,
        ticket: Option<PipelineTicket>,
        must_take: bool,
    ) -> Offer;
}
