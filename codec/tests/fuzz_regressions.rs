//! Replays saved fuzz inputs through the fuzz targets' own checks.
//!
//! `tests/regressions/` holds crash inputs the fuzzer found (and hand-made hostile shapes);
//! each is run through both protocol versions and through the `roundtrip` invariants in
//! `common/invariants.rs`, the file the fuzz targets include, so a fixed crash stays fixed
//! under `cargo test`. The seed corpus in `fuzz/seeds/` is replayed too: it is valid traffic
//! of every packet type, which keeps the invariants' encode-and-decode-again path exercised
//! here and not only while fuzzing.

#[path = "common/invariants.rs"]
mod invariants;

use std::fs;
use std::path::{Path, PathBuf};

use petrel_codec::{DecodeError, Decoded, Decoder, ProtocolVersion};

const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every regular file under `dir` (one level of subdirectories followed), sorted, except
/// Markdown notes.
fn input_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_none_or(|ext| ext != "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs one input through every check a fuzz target applies to it.
fn replay(path: &Path) {
    let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Shown with the panic message when a check fails, to name the input.
    eprintln!("replaying {} ({} bytes)", path.display(), data.len());
    for version in VERSIONS {
        invariants::check_decode_input(version, &data);
        invariants::check_stream(Decoder::new(version), &data);
    }
    invariants::check_roundtrip_input(&data);
}

#[test]
fn regression_inputs_hold_every_invariant() {
    let files = input_files(&manifest_dir().join("tests/regressions"));
    assert!(
        files.len() >= 10,
        "the regression directory lost its seed inputs"
    );
    for path in &files {
        replay(path);
    }
}

#[test]
fn seed_corpus_holds_every_invariant() {
    let seeds = manifest_dir().join("../fuzz/seeds");
    if !seeds.is_dir() {
        // The codec can be built without the rest of the repository around it.
        eprintln!("no {}; skipped", seeds.display());
        return;
    }
    let files = input_files(&seeds);
    assert!(!files.is_empty(), "{} is empty", seeds.display());
    let mut packets = 0;
    for path in &files {
        replay(path);
        let data = fs::read(path).expect("seed file");
        packets += VERSIONS
            .iter()
            .map(|&v| invariants::check_stream(Decoder::new(v), &data))
            .sum::<usize>();
    }
    // Seeds are valid packets; if none decoded, the invariants' round trip never ran.
    assert!(
        packets >= files.len(),
        "only {packets} packets in {} seeds",
        files.len()
    );
}

/// What each hand-made input must give, so that it keeps testing what its name says.
#[test]
fn hand_made_inputs_fail_as_intended() {
    use DecodeError as E;
    let cases: &[(&str, ProtocolVersion, Result<Decoded<'static>, DecodeError>)] = &[
        (
            "mqttrs-publish-topic-past-end",
            ProtocolVersion::V311,
            Err(E::UnexpectedEnd),
        ),
        (
            "mqttrs-publish-topic-past-end",
            ProtocolVersion::V5,
            Err(E::UnexpectedEnd),
        ),
        (
            "remaining-length-five-bytes",
            ProtocolVersion::V5,
            Err(E::MalformedVariableByteInteger),
        ),
        (
            "remaining-length-not-minimal",
            ProtocolVersion::V5,
            Err(E::MalformedVariableByteInteger),
        ),
        (
            "remaining-length-largest",
            ProtocolVersion::V5,
            Ok(Decoded::Incomplete {
                needed: 268_435_455,
            }),
        ),
        (
            "v5-property-length-past-end",
            ProtocolVersion::V5,
            Err(E::UnexpectedEnd),
        ),
        (
            "v5-property-length-past-end",
            ProtocolVersion::V311,
            Err(E::TrailingBytes),
        ),
        (
            "v5-subscription-identifier-five-bytes",
            ProtocolVersion::V5,
            Err(E::MalformedVariableByteInteger),
        ),
        (
            "subscribe-without-filters",
            ProtocolVersion::V311,
            Err(E::NoTopicFilters),
        ),
        (
            "connect-mqtt-3.1",
            ProtocolVersion::V5,
            Err(E::UnsupportedProtocolVersion(3)),
        ),
        (
            "publish-topic-surrogate",
            ProtocolVersion::V311,
            Err(E::InvalidUtf8),
        ),
        (
            "empty",
            ProtocolVersion::V5,
            Ok(Decoded::Incomplete { needed: 1 }),
        ),
    ];
    let dir = manifest_dir().join("tests/regressions");
    for (name, version, expected) in cases {
        let data = fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            &Decoder::new(*version).decode(&data),
            expected,
            "{name} under {version:?}"
        );
    }

    // A packet, then a reserved type: the first decodes, the stream then fails.
    let data = fs::read(dir.join("pubrec-then-reserved-type")).expect("input");
    let decoder = Decoder::new(ProtocolVersion::V311);
    let Ok(Decoded::Packet { len, .. }) = decoder.decode(&data) else {
        panic!("the PUBREC does not decode");
    };
    assert_eq!(decoder.decode(&data[len..]), Err(E::InvalidPacketType(0)));
    // The size limit, from the header alone.
    let data = fs::read(dir.join("remaining-length-largest")).expect("input");
    assert_eq!(
        decoder.with_max_packet_size(1024).decode(&data),
        Err(E::PacketTooLarge {
            size: 268_435_460,
            maximum: 1024
        })
    );
}
