//! Decoding, iterating and encoding never touch the heap.
//!
//! A counting global allocator wraps the system one. Counting is switched on per thread,
//! only around the code under test, because the harness runs tests on parallel threads that
//! allocate (their names, their output capture) and one test must not see another's
//! allocations.

// A global allocator is `unsafe impl GlobalAlloc` by definition, and forwarding to `System`
// calls its unsafe methods. The workspace denies unsafe code (and the library forbids it in
// its own source); this test binary is the one place allowed to opt out.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Write as _;
use std::hint::black_box;

use petrel_codec::{
    Auth, ConnAck, Connect, Decoded, Decoder, Disconnect, Packet, PacketId, Properties,
    ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscribeFilter, SubscriptionId, SubscriptionOptions, UnsubAck, Unsubscribe, UserProperty,
    Will, EMPTY_PROPERTIES,
};

struct CountingAllocator;

thread_local! {
    // `const` initialisers and types without destructors: using them from inside the
    // allocator never allocates or registers a destructor, so it cannot recurse.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn record_allocation() {
    // `try_with`: during thread teardown the slots may be gone; nothing is being measured then.
    let counting = COUNTING.try_with(Cell::get).unwrap_or(false);
    if counting {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record_allocation();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record_allocation();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record_allocation();
        // SAFETY: as for `alloc`; `ptr` came from this allocator, hence from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` and returns how many allocations (alloc, alloc_zeroed, realloc) it made on this
/// thread.
fn allocations_in<R>(f: impl FnOnce() -> R) -> (R, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let result = f();
    COUNTING.with(|c| c.set(false));
    (result, ALLOCATIONS.with(Cell::get))
}

#[test]
fn the_counter_sees_allocations() {
    let (_, count) = allocations_in(|| black_box(vec![1u8; 16]));
    assert_eq!(count, 1, "the counting allocator is not in use");
    let (_, count) = allocations_in(|| {
        let mut v = black_box(Vec::<u64>::with_capacity(1));
        v.extend([1, 2, 3, 4, 5]);
        v
    });
    assert_eq!(count, 2, "realloc is not counted");
}

/// A `fmt::Write` that only counts, so formatting can be checked without a `String`.
struct CountingSink(usize);

impl std::fmt::Write for CountingSink {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The packets

static USER_PROPERTIES: [UserProperty<'static>; 3] = [
    UserProperty {
        name: "trace-id",
        value: "4bf92f3577b34da6a3ce929d0e0e4736",
    },
    UserProperty {
        name: "tenant",
        value: "acme",
    },
    UserProperty {
        name: "tenant",
        value: "acme-eu",
    },
];

static SUBSCRIPTION_IDS: [SubscriptionId; 3] = [
    SubscriptionId(1),
    SubscriptionId(300),
    SubscriptionId(268_435_455),
];

static ONE_SUBSCRIPTION_ID: [SubscriptionId; 1] = [SubscriptionId(70_000)];

static SUBACK_V5: [ReasonCode; 5] = [
    ReasonCode::Success,
    ReasonCode::GrantedQoS1,
    ReasonCode::GrantedQoS2,
    ReasonCode::NotAuthorized,
    ReasonCode::SharedSubscriptionsNotSupported,
];

static SUBACK_V311: [ReasonCode; 4] = [
    ReasonCode::Success,
    ReasonCode::GrantedQoS1,
    ReasonCode::GrantedQoS2,
    ReasonCode::UnspecifiedError,
];

static UNSUBACK_V5: [ReasonCode; 3] = [
    ReasonCode::Success,
    ReasonCode::NoSubscriptionExisted,
    ReasonCode::TopicFilterInvalid,
];

const FILTER_COUNT: usize = 64;

/// SUBSCRIBE filters of every shape: plain, `+`, `#`, `$share/…`, multi-byte UTF-8.
fn filter_text(i: usize) -> String {
    match i % 6 {
        0 => format!("sensors/{i}/temperature"),
        1 => format!("sensors/+/zone-{i}"),
        2 => format!("home/{i}/#"),
        3 => format!("$share/group-{i}/jobs/+/queued"),
        4 => format!("städte/zürich/{i}/wetter"),
        _ => "#".to_owned(),
    }
}

/// Packet data that outlives every test: `List`s borrow their elements.
struct Storage {
    filter_texts: &'static [String],
    filters_v311: Vec<SubscribeFilter<'static>>,
    filters_v5: Vec<SubscribeFilter<'static>>,
    unsubscribe_filters: Vec<&'static str>,
}

fn storage() -> &'static Storage {
    static STORAGE: std::sync::OnceLock<Storage> = std::sync::OnceLock::new();
    STORAGE.get_or_init(|| {
        let filter_texts: &'static [String] =
            Vec::leak((0..FILTER_COUNT).map(filter_text).collect());
        let qos = |i: usize| [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][i % 3];
        let filters_v311 = filter_texts
            .iter()
            .enumerate()
            .map(|(i, f)| SubscribeFilter {
                filter: f,
                options: SubscriptionOptions::qos(qos(i)),
            })
            .collect();
        let filters_v5 = filter_texts
            .iter()
            .enumerate()
            .map(|(i, f)| SubscribeFilter {
                filter: f,
                options: SubscriptionOptions {
                    // No Local is refused on a shared subscription.
                    no_local: i % 2 == 0 && !f.starts_with("$share/"),
                    retain_as_published: i % 3 == 0,
                    retain_handling: match i % 3 {
                        0 => RetainHandling::SendOnSubscribe,
                        1 => RetainHandling::SendIfNew,
                        _ => RetainHandling::DoNotSend,
                    },
                    ..SubscriptionOptions::qos(qos(i))
                },
            })
            .collect();
        let unsubscribe_filters = filter_texts.iter().map(String::as_str).collect();
        Storage {
            filter_texts,
            filters_v311,
            filters_v5,
            unsubscribe_filters,
        }
    })
}

fn id(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero")
}

fn rich_properties() -> Properties<'static> {
    Properties {
        reason_string: Some("all good"),
        user_properties: petrel_codec::List::new(&USER_PROPERTIES),
        ..EMPTY_PROPERTIES
    }
}

/// Every packet type, over both versions where it exists, with the richest content each
/// version allows: every field that decodes into a `List` is non-empty somewhere.
fn packets() -> Vec<(ProtocolVersion, Packet<'static>)> {
    use ProtocolVersion::{V311, V5};
    let s = storage();
    let user_properties = petrel_codec::List::new(&USER_PROPERTIES);
    let will = |properties| Will {
        topic: "clients/abc/status",
        payload: b"gone",
        qos: QoS::ExactlyOnce,
        retain: true,
        properties,
    };
    let connect_v5 = Connect {
        protocol_version: V5,
        clean_start: false,
        keep_alive: 30,
        properties: Properties {
            session_expiry_interval: Some(86_400),
            receive_maximum: Some(20),
            maximum_packet_size: Some(1 << 20),
            topic_alias_maximum: Some(10),
            request_response_information: Some(true),
            request_problem_information: Some(false),
            authentication_method: Some("SCRAM-SHA-1"),
            authentication_data: Some(b"client-first-message"),
            user_properties,
            ..EMPTY_PROPERTIES
        },
        client_id: "client-ünïcode-1",
        will: Some(will(Properties {
            will_delay_interval: Some(5),
            payload_format_indicator: Some(true),
            message_expiry_interval: Some(60),
            content_type: Some("text/plain"),
            response_topic: Some("replies/abc"),
            correlation_data: Some(&[1, 2, 3, 4]),
            user_properties,
            ..EMPTY_PROPERTIES
        })),
        username: Some("user"),
        password: Some(&[0, 159, 146, 150, 255]),
    };
    let connect_v311 = Connect {
        protocol_version: V311,
        clean_start: true,
        properties: EMPTY_PROPERTIES,
        will: Some(will(EMPTY_PROPERTIES)),
        ..connect_v5
    };
    let publish_v5 = Publish {
        dup: true,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: "a/b/ç/日本",
        packet_id: Some(id(9)),
        properties: Properties {
            payload_format_indicator: Some(false),
            message_expiry_interval: Some(3600),
            content_type: Some("application/cbor"),
            response_topic: Some("replies/a/b"),
            correlation_data: Some(b"corr"),
            subscription_identifiers: petrel_codec::List::new(&SUBSCRIPTION_IDS),
            topic_alias: Some(3),
            user_properties,
            ..EMPTY_PROPERTIES
        },
        payload: &[0xAB; 300],
    };
    let connack_v5 = ConnAck {
        session_present: true,
        reason_code: ReasonCode::Success,
        properties: Properties {
            session_expiry_interval: Some(0),
            receive_maximum: Some(65_535),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            maximum_packet_size: Some(4096),
            assigned_client_identifier: Some("auto-1234"),
            topic_alias_maximum: Some(0),
            reason_string: Some("welcome"),
            user_properties,
            wildcard_subscription_available: Some(true),
            subscription_identifier_available: Some(true),
            shared_subscription_available: Some(false),
            server_keep_alive: Some(120),
            response_information: Some("replies/"),
            server_reference: Some("other.example:1883"),
            authentication_method: Some("SCRAM-SHA-1"),
            authentication_data: Some(b"server-final"),
            ..EMPTY_PROPERTIES
        },
    };
    let response = |packet_id, reason_code| PubResponse {
        packet_id: id(packet_id),
        reason_code,
        properties: rich_properties(),
    };

    let mut packets = vec![
        (V311, Packet::Connect(connect_v311)),
        (V5, Packet::Connect(connect_v5)),
        (V311, Packet::ConnAck(ConnAck::default())),
        (
            V311,
            Packet::ConnAck(ConnAck {
                reason_code: ReasonCode::NotAuthorized,
                ..ConnAck::default()
            }),
        ),
        (V5, Packet::ConnAck(connack_v5)),
        (
            V311,
            Packet::Publish(Publish {
                topic: "plain/qos0",
                payload: b"hello",
                ..Publish::default()
            }),
        ),
        (
            V311,
            Packet::Publish(Publish {
                qos: QoS::ExactlyOnce,
                topic: "a/b/ç/日本",
                packet_id: Some(id(65_535)),
                payload: &[],
                ..Publish::default()
            }),
        ),
        (V5, Packet::Publish(publish_v5)),
        (
            V5,
            Packet::Publish(Publish {
                // An empty topic stands for the alias.
                topic: "",
                properties: Properties {
                    topic_alias: Some(3),
                    ..EMPTY_PROPERTIES
                },
                payload: b"aliased",
                ..Publish::default()
            }),
        ),
        (V311, Packet::PubAck(PubResponse::new(id(1)))),
        (V311, Packet::PubRec(PubResponse::new(id(2)))),
        (V311, Packet::PubRel(PubResponse::new(id(3)))),
        (V311, Packet::PubComp(PubResponse::new(id(4)))),
        (
            V5,
            Packet::PubAck(response(5, ReasonCode::NoMatchingSubscribers)),
        ),
        (V5, Packet::PubRec(response(6, ReasonCode::QuotaExceeded))),
        (
            V5,
            Packet::PubRel(response(7, ReasonCode::PacketIdentifierNotFound)),
        ),
        (V5, Packet::PubComp(response(8, ReasonCode::Success))),
        (
            V5,
            Packet::PubAck(PubResponse {
                reason_code: ReasonCode::NotAuthorized,
                ..PubResponse::new(id(9))
            }),
        ),
        (
            V311,
            Packet::Subscribe(Subscribe {
                packet_id: id(10),
                properties: EMPTY_PROPERTIES,
                filters: petrel_codec::List::new(&s.filters_v311),
            }),
        ),
        (
            V5,
            Packet::Subscribe(Subscribe {
                packet_id: id(11),
                properties: Properties {
                    subscription_identifiers: petrel_codec::List::new(&ONE_SUBSCRIPTION_ID),
                    user_properties,
                    ..EMPTY_PROPERTIES
                },
                filters: petrel_codec::List::new(&s.filters_v5),
            }),
        ),
        (
            V311,
            Packet::SubAck(SubAck {
                packet_id: id(12),
                properties: EMPTY_PROPERTIES,
                reason_codes: petrel_codec::List::new(&SUBACK_V311),
            }),
        ),
        (
            V5,
            Packet::SubAck(SubAck {
                packet_id: id(13),
                properties: rich_properties(),
                reason_codes: petrel_codec::List::new(&SUBACK_V5),
            }),
        ),
        (
            V311,
            Packet::Unsubscribe(Unsubscribe {
                packet_id: id(14),
                properties: EMPTY_PROPERTIES,
                filters: petrel_codec::List::new(&s.unsubscribe_filters),
            }),
        ),
        (
            V5,
            Packet::Unsubscribe(Unsubscribe {
                packet_id: id(15),
                properties: Properties {
                    user_properties,
                    ..EMPTY_PROPERTIES
                },
                filters: petrel_codec::List::new(&s.unsubscribe_filters),
            }),
        ),
        (
            V311,
            Packet::UnsubAck(UnsubAck {
                packet_id: id(16),
                properties: EMPTY_PROPERTIES,
                reason_codes: petrel_codec::List::empty(),
            }),
        ),
        (
            V5,
            Packet::UnsubAck(UnsubAck {
                packet_id: id(17),
                properties: rich_properties(),
                reason_codes: petrel_codec::List::new(&UNSUBACK_V5),
            }),
        ),
        (V311, Packet::PingReq),
        (V5, Packet::PingReq),
        (V311, Packet::PingResp),
        (V5, Packet::PingResp),
        (V311, Packet::Disconnect(Disconnect::default())),
        (V5, Packet::Disconnect(Disconnect::default())),
        (
            V5,
            Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::ServerMoved,
                properties: Properties {
                    session_expiry_interval: Some(10),
                    server_reference: Some("other.example:1883"),
                    ..rich_properties()
                },
            }),
        ),
        (V5, Packet::Auth(Auth::default())),
        (
            V5,
            Packet::Auth(Auth {
                reason_code: ReasonCode::ContinueAuthentication,
                properties: Properties {
                    authentication_method: Some("SCRAM-SHA-1"),
                    authentication_data: Some(b"client-final"),
                    ..rich_properties()
                },
            }),
        ),
    ];
    // Both versions of each packet type that exists in both.
    let v311_types: Vec<_> = packets
        .iter()
        .filter(|(v, _)| *v == V311)
        .map(|(_, p)| p.packet_type())
        .collect();
    let v5_types: Vec<_> = packets
        .iter()
        .filter(|(v, _)| *v == V5)
        .map(|(_, p)| p.packet_type())
        .collect();
    for t in 1..=15u8 {
        let t = petrel_codec::PacketType::from_nibble(t).expect("1 to 15 are packet types");
        assert!(v5_types.contains(&t), "{t:?} is missing over 5.0");
        if t != petrel_codec::PacketType::Auth {
            assert!(v311_types.contains(&t), "{t:?} is missing over 3.1.1");
        }
    }
    packets.shrink_to_fit();
    packets
}

fn encoded(version: ProtocolVersion, packet: &Packet<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; packet.encoded_len(version).expect("encodable")];
    let len = packet.encode(version, &mut buf).expect("encodes");
    assert_eq!(len, buf.len());
    buf
}

/// Walks every repeated field of a properties block, and the accessors built on them.
fn walk_properties(properties: &Properties<'_>) -> usize {
    let mut n = 0;
    for p in properties.user_properties.iter() {
        n += p.name.len() + p.value.len();
    }
    for id in &properties.subscription_identifiers {
        n += id.0 as usize;
    }
    n += properties.user_properties.len() + properties.subscription_identifiers.len();
    n += usize::from(properties.user_properties.is_empty());
    n += properties
        .subscription_identifier()
        .map_or(0, |id| id.0 as usize);
    n += usize::from(properties.is_empty());
    n
}

/// Walks every `List` field of a decoded packet; returns a number that depends on all of
/// them, so none of the walks can be optimised away.
fn walk(packet: &Packet<'_>) -> usize {
    let mut n = match packet {
        Packet::Connect(c) => {
            walk_properties(&c.properties)
                + c.will
                    .as_ref()
                    .map_or(0, |w| walk_properties(&w.properties))
        }
        Packet::ConnAck(c) => walk_properties(&c.properties),
        Packet::Publish(p) => walk_properties(&p.properties) + p.topic.len() + p.payload.len(),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            walk_properties(&r.properties)
        }
        Packet::Subscribe(s) => {
            let mut n = walk_properties(&s.properties) + s.filters.len();
            for f in s.filters.iter() {
                n += f.filter.len() + f.options.qos as usize;
            }
            n
        }
        Packet::SubAck(s) => {
            walk_properties(&s.properties)
                + s.reason_codes.len()
                + s.reason_codes.iter().map(|c| c as usize).sum::<usize>()
        }
        Packet::Unsubscribe(u) => {
            walk_properties(&u.properties)
                + u.filters.len()
                + u.filters.iter().map(str::len).sum::<usize>()
        }
        Packet::UnsubAck(u) => {
            walk_properties(&u.properties)
                + u.reason_codes.len()
                + u.reason_codes.iter().map(|c| c as usize).sum::<usize>()
        }
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => walk_properties(&d.properties),
        Packet::Auth(a) => walk_properties(&a.properties),
    };
    // Debug formatting reads every field, lists included, through core::fmt only.
    let mut sink = CountingSink(0);
    write!(sink, "{packet:?}").expect("the sink never fails");
    n += sink.0;
    n
}

fn decode<'a>(version: ProtocolVersion, bytes: &'a [u8]) -> Packet<'a> {
    match Decoder::new(version).decode(bytes) {
        Ok(Decoded::Packet { packet, len }) => {
            assert_eq!(len, bytes.len());
            packet
        }
        other => panic!("not a whole packet: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn decoding_and_iterating_every_packet_type_allocates_nothing() {
    for (version, packet) in packets() {
        let bytes = encoded(version, &packet);
        let ((decoded, walked), count) = allocations_in(|| {
            let decoded = decode(version, &bytes);
            let walked = walk(&decoded);
            // Comparing walks both sides' lists too.
            assert!(decoded == packet);
            (decoded, black_box(walked))
        });
        assert_eq!(
            count,
            0,
            "{version:?} {:?}: decode and iteration allocated",
            packet.packet_type()
        );
        assert_eq!(decoded, packet);
        assert!(walked > 0);
    }
}

#[test]
fn the_subscribe_lists_are_long_and_complete() {
    let s = storage();
    assert_eq!(s.filter_texts.len(), FILTER_COUNT);
    for (version, packet) in packets() {
        if let Packet::Subscribe(sub) = packet {
            let bytes = encoded(version, &packet);
            let (filters, count) = allocations_in(|| match decode(version, &bytes) {
                Packet::Subscribe(decoded) => decoded.filters.iter().count(),
                other => panic!("decoded {other:?}"),
            });
            assert_eq!(count, 0);
            assert_eq!(filters, FILTER_COUNT);
            assert_eq!(sub.filters.len(), FILTER_COUNT);
        }
    }
}

#[test]
fn partial_and_corrupted_input_allocates_nothing() {
    for (version, packet) in packets() {
        let bytes = encoded(version, &packet);
        let mut corrupted = bytes.clone();
        let ((), count) = allocations_in(|| {
            let decoder = Decoder::new(version);
            // Every prefix: the streaming answers (incomplete) and the errors they lead to.
            for end in 0..bytes.len() {
                black_box(decoder.decode(&bytes[..end])).ok();
            }
            // Every single-byte corruption: whatever the outcome, it must not allocate.
            for at in 0..corrupted.len() {
                for flip in [0x01, 0x80, 0xFF] {
                    corrupted[at] ^= flip;
                    if let Ok(Decoded::Packet { packet, .. }) = decoder.decode(&corrupted) {
                        black_box(walk(&packet));
                    }
                    corrupted[at] ^= flip;
                }
            }
        });
        assert_eq!(
            count,
            0,
            "{version:?} {:?}: decoding bad input allocated",
            packet.packet_type()
        );
    }
}

#[test]
fn encoding_into_a_slice_allocates_nothing() {
    for (version, packet) in packets() {
        let expected = encoded(version, &packet);
        let mut buf = [0u8; 4096];
        let mut heapless = heapless::Vec::<u8, 4096>::new();
        let (len, count) = allocations_in(|| {
            let len = packet.encoded_len(version).expect("encodable");
            assert!(packet.encode(version, &mut buf[..len - 1]).is_err());
            let written = packet.encode(version, &mut buf).expect("encodes");
            assert_eq!(written, len);
            let written = packet
                .encode_to_heapless(version, &mut heapless)
                .expect("encodes");
            assert_eq!(written, len);
            len
        });
        assert_eq!(
            count,
            0,
            "{version:?} {:?}: encoding allocated",
            packet.packet_type()
        );
        assert_eq!(&buf[..len], &expected[..]);
        assert_eq!(&heapless[..], &expected[..]);
    }
}
