//! Arbitrary byte streams into a whole broker shard: the codec, eight server connections and
//! the broker core behind them, on a virtual clock. Nothing may panic, and what the broker
//! holds stays within its limits.
//!
//! The input is a list of records `[op, len, bytes…]`:
//!
//! - `op >> 6` is 0 or 3: `len` bytes for connection `op & 7` (opened on first use);
//! - 1: connection `op & 7` is lost (the transport closed);
//! - 2: time moves on by `len` × 100 ms.
//!
//! After every record the broker's outputs are drained as the runtime would: bytes to
//! send, connections to close and release, and the shard may hold no more connections and
//! retained messages than its limits. At the end every connection is lost, time moves past
//! every expiry, and nothing may be left open. Memory is watched by libFuzzer's
//! `-rss_limit_mb` and `-malloc_limit_mb` (2 GB by default): a leak or an unbounded queue
//! shows up as an `oom-…` artifact.
//!
//! The hooks observe every packet (`Hooks::on_packet`), so the packet trace, which decodes
//! again what the connections decoded and encoded, runs on every input too.
#![no_main]

use std::sync::Arc;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use petrel_codec::Packet;
use petrel_state::broker::limits::{ClientLimits, Rate};
use petrel_state::broker::{
    describe_packet, Broker, BrokerConfig, ClientInfo, ConnectionId, Hooks, NoStorage,
    PacketDirection,
};
use petrel_state::server::{QueueLimits, ServerConfig};
use petrel_state::{Duration, Instant};

const CONNECTIONS: usize = 8;
const MAX_RETAINED: usize = 16;
const MAX_PACKET: u32 = 4096;

fn broker() -> Broker {
    let server = ServerConfig {
        max_packet_size: MAX_PACKET,
        receive_maximum: 8,
        max_outbound_buffer: 16 * 1024,
        max_session_expiry: 3600,
        queue: QueueLimits {
            max_messages: 32,
            max_bytes: 64 * 1024,
            queue_qos0_offline: true,
        },
        ..ServerConfig::default()
    };
    let config = BrokerConfig {
        server: Arc::new(server),
        max_retained: MAX_RETAINED,
        limits: ClientLimits {
            publish_rate: Some(Rate {
                per_second: 1000,
                burst: 200,
            }),
            max_topic_levels: 16,
            max_topic_length: 256,
        },
        ..BrokerConfig::default()
    };
    Broker::new(config, Box::new(Trace), Box::new(NoStorage))
}

/// Hooks that allow everything and describe every packet.
struct Trace;

impl Hooks for Trace {
    fn observes_packets(&self) -> bool {
        true
    }

    fn on_packet(
        &mut self,
        _client: &ClientInfo<'_>,
        _direction: PacketDirection,
        packet: &Packet<'_>,
        frame: &[u8],
    ) {
        assert!(!frame.is_empty());
        std::hint::black_box(describe_packet(packet));
    }
}

struct Harness {
    broker: Broker,
    now: Instant,
    conns: [Option<ConnectionId>; CONNECTIONS],
    out: BytesMut,
}

impl Harness {
    fn drain(&mut self) {
        while let Some(id) = self.broker.poll_ready() {
            self.out.clear();
            while self.broker.poll_transmit(self.now, id, &mut self.out) > 0 {
                self.out.clear();
            }
        }
        while let Some(id) = self.broker.poll_closed() {
            self.out.clear();
            while self.broker.poll_transmit(self.now, id, &mut self.out) > 0 {
                self.out.clear();
            }
            self.broker.release(id);
            for slot in self.conns.iter_mut() {
                if *slot == Some(id) {
                    *slot = None;
                }
            }
        }
        assert!(self.broker.connection_count() <= CONNECTIONS);
        assert!(self.broker.retained_count() <= MAX_RETAINED);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut h = Harness {
        broker: broker(),
        now: Instant::from_secs(1),
        conns: [None; CONNECTIONS],
        out: BytesMut::new(),
    };
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let slot = usize::from(op & 7);
        let len = usize::from(*len);
        match op >> 6 {
            1 => {
                if let Some(id) = h.conns[slot] {
                    h.broker.connection_lost(h.now, id);
                }
                rest = tail;
            }
            2 => {
                h.now = h.now + Duration::from_millis(100 * len as u64);
                h.broker.handle_timeout(h.now);
                rest = tail;
            }
            _ => {
                let take = len.min(tail.len());
                let id =
                    *h.conns[slot].get_or_insert_with(|| h.broker.open(h.now, Some("10.0.0.1:1")));
                h.broker.handle_bytes(h.now, id, &tail[..take]);
                rest = &tail[take..];
            }
        }
        h.drain();
    }
    for slot in 0..CONNECTIONS {
        if let Some(id) = h.conns[slot] {
            h.broker.connection_lost(h.now, id);
        }
    }
    h.drain();
    h.now = h.now + Duration::from_secs(7200);
    h.broker.handle_timeout(h.now);
    h.drain();
    assert_eq!(h.broker.connection_count(), 0);
});
