//! `petrel-bench` over TLS, mTLS, WebSocket and secure WebSocket against real brokers: the
//! `petrel` binary of this workspace and mosquitto, each with those listeners on free
//! loopback ports. Every message must arrive exactly once, and a client that does not
//! trust the broker's certificate must fail to connect. Certificates are made at test time
//! (rcgen) in a scratch directory.
//!
//! The petrel binary is the one `cargo test --workspace` builds next to this test
//! (`target/<profile>/petrel`); run alone, build it first (`cargo build -p petrel`). When
//! it or mosquitto is missing the test says so and skips that broker.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use petrel_benches::load::report::Report;
use petrel_benches::load::run::{run_blocking, Config, Topology};
use petrel_benches::load::transport::{TlsOptions, TransportConfig};
use petrel_codec::{ProtocolVersion, QoS};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A scratch directory, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "petrel-bench-transports-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        // mosquitto, started as root, drops to its own user, which must read the keys.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate authority with a server certificate for 127.0.0.1 and `localhost`, and a
/// client certificate: `ca.pem`, `server.pem`/`server.key`, `client.pem`/`client.key`.
fn certificates(dir: &Scratch, ca_name: &str) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    std::fs::write(dir.path("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let issue = |stem: &str, mut params: CertificateParams, usage| {
        let key = KeyPair::generate().unwrap();
        params.distinguished_name.push(DnType::CommonName, stem);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.path(&format!("{stem}.pem")), cert.pem()).unwrap();
        let key_path = dir.path(&format!("{stem}.key"));
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    };
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    issue(
        "server",
        CertificateParams::new(names).unwrap(),
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    issue(
        "client",
        CertificateParams::new(Vec::<String>::new()).unwrap(),
        ExtendedKeyUsagePurpose::ClientAuth,
    );
}

/// A broker process, killed when dropped.
struct Broker {
    child: Child,
    log: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, broker: &mut Broker) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            broker.child.try_wait().unwrap().is_none(),
            "the broker exited at start:\n{}",
            broker.log()
        );
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The petrel binary built beside this test, if it was built.
fn petrel_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let petrel = profile_dir.join("petrel");
    if petrel.exists() {
        Some(petrel)
    } else {
        eprintln!(
            "skipping petrel: {} is not built (cargo build -p petrel)",
            petrel.display()
        );
        None
    }
}

/// The listeners every broker here gets, in this order.
const LISTENERS: [&str; 4] = ["tls", "mtls", "ws", "wss"];

/// Starts petrel with a TLS, an mTLS, a WebSocket and a secure WebSocket listener; their
/// ports in [`LISTENERS`] order.
fn start_petrel(dir: &Scratch) -> Option<(Broker, Vec<u16>)> {
    let binary = petrel_binary()?;
    let p = |name: &str| dir.path(name).display().to_string();
    let tls = format!(
        "certs = [{{ cert = \"{}\", key = \"{}\" }}]",
        p("server.pem"),
        p("server.key")
    );
    let config = format!(
        "workers = 2\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\ntls = {{ {tls} }}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\ntls = {{ {tls}, client_ca = \"{}\" }}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nwebsocket = {{ path = \"/mqtt\" }}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nwebsocket = {{ path = \"/mqtt\" }}\ntls = {{ {tls} }}\n",
        p("ca.pem"),
    );
    std::fs::write(dir.path("petrel.toml"), config).unwrap();
    std::fs::create_dir_all(dir.path("petrel-data")).unwrap();
    let log = dir.path("petrel.log");
    let mut child = Command::new(binary)
        .args(["--log-level", "info", "--config"])
        .arg(dir.path("petrel.toml"))
        .current_dir(dir.path("petrel-data"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start petrel");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ports = Vec::new();
    for _ in LISTENERS {
        let line = lines.next().expect("a listening line").unwrap();
        let addr: std::net::SocketAddr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .parse()
            .unwrap();
        ports.push(addr.port());
    }
    // Keep reading so the broker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Some((Broker { child, log }, ports))
}

/// Starts mosquitto with the same four listeners; `None` (with a message) if it is not
/// installed.
fn start_mosquitto(dir: &Scratch) -> Option<(Broker, Vec<u16>)> {
    let binary = ["mosquitto", "/usr/sbin/mosquitto"].into_iter().find(|b| {
        Command::new(b)
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    let Some(binary) = binary else {
        eprintln!("skipping mosquitto: not installed (apt-get install mosquitto)");
        return None;
    };
    let p = |name: &str| dir.path(name).display().to_string();
    let ports: Vec<u16> = LISTENERS.iter().map(|_| free_port()).collect();
    let tls = format!(
        "certfile {}\nkeyfile {}\ncafile {}\n",
        p("server.pem"),
        p("server.key"),
        p("ca.pem")
    );
    let log = dir.path("mosquitto.log");
    let config = format!(
        "per_listener_settings false\nallow_anonymous true\nmax_queued_messages 0\n\
         persistence false\nlog_dest file {}\nlog_type error\n\
         listener {} 127.0.0.1\n{tls}\
         listener {} 127.0.0.1\n{tls}require_certificate true\n\
         listener {} 127.0.0.1\nprotocol websockets\n\
         listener {} 127.0.0.1\nprotocol websockets\n{tls}",
        log.display(),
        ports[0],
        ports[1],
        ports[2],
        ports[3],
    );
    std::fs::write(dir.path("mosquitto.conf"), config).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let child = Command::new(binary)
        .arg("-c")
        .arg(dir.path("mosquitto.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto");
    let mut broker = Broker { child, log };
    for &port in &ports {
        wait_for_port(port, &mut broker);
    }
    Some((broker, ports))
}

fn tls_options(dir: &Scratch, client_cert: bool) -> TlsOptions {
    TlsOptions {
        ca_file: Some(dir.path("ca.pem")),
        client_cert: client_cert.then(|| dir.path("client.pem")),
        client_key: client_cert.then(|| dir.path("client.key")),
        ..TlsOptions::default()
    }
}

/// The transport for the listener `name` of [`LISTENERS`].
fn transport(dir: &Scratch, name: &str) -> TransportConfig {
    match name {
        "tls" => TransportConfig {
            tls: Some(tls_options(dir, false)),
            ws_path: None,
        },
        "mtls" => TransportConfig {
            tls: Some(tls_options(dir, true)),
            ws_path: None,
        },
        "ws" => TransportConfig {
            tls: None,
            ws_path: Some("/mqtt".into()),
        },
        "wss" => TransportConfig {
            tls: Some(tls_options(dir, false)),
            ws_path: Some("/mqtt".into()),
        },
        other => unreachable!("{other}"),
    }
}

/// A QoS 1 fan-in of 3 publishers × `count` messages over `transport`.
fn fan_in(port: u16, transport: TransportConfig, version: ProtocolVersion, count: u64) -> Report {
    let mut c = Config::new("fan-in", Topology::FanIn { publishers: 3 });
    c.port = port;
    c.transport = transport;
    c.version = version;
    c.qos = QoS::AtLeastOnce;
    c.sub_qos = QoS::AtLeastOnce;
    // Large enough that a publisher's batch spans several TLS records and WebSocket frames.
    c.payload = 3000;
    c.count = Some(count);
    c.duration = None;
    c.threads = 2;
    run_blocking(&c).expect("fan-in runs")
}

fn conn(port: u16, transport: TransportConfig, clients: usize) -> Report {
    let mut c = Config::new(
        "conn",
        Topology::Conn {
            clients,
            subscribe: true,
        },
    );
    c.port = port;
    c.transport = transport;
    c.hold = Duration::from_millis(200);
    c.duration = Some(c.hold);
    c.threads = 2;
    run_blocking(&c).expect("conn runs")
}

/// Every message over every transport arrives once; connections open and subscribe.
fn exercise(broker: &Broker, ports: &[u16], dir: &Scratch) {
    for (name, &port) in LISTENERS.iter().zip(ports) {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let count = 400;
            let r = fan_in(port, transport(dir, name), version, count);
            let context = format!(
                "{name} {version:?}\n{}\nbroker log:\n{}",
                r.human(),
                broker.log()
            );
            assert_eq!(r.connections.established, 4, "{context}");
            assert_eq!(r.published.sent, 3 * count, "{context}");
            assert_eq!(r.published.acked, 3 * count, "{context}");
            let d = r.delivered.as_ref().expect("delivered");
            assert_eq!(d.unique, 3 * count, "{context}");
            assert_eq!((d.lost, d.duplicates), (Some(0), 0), "{context}");
            assert!(r.transport.contains(" over "), "{context}");
        }
        let r = conn(port, transport(dir, name), 20);
        assert_eq!(
            (r.connections.established, r.connections.failed),
            (20, 0),
            "{name}\n{}\nbroker log:\n{}",
            r.human(),
            broker.log()
        );
    }
}

/// A client that trusts another authority, or that has no certificate where one is
/// required, does not get in; `--insecure` does.
fn refusals(ports: &[u16], dir: &Scratch, other: &Scratch) {
    let mut untrusting = transport(dir, "tls");
    untrusting.tls.as_mut().unwrap().ca_file = Some(other.path("ca.pem"));
    let r = conn(ports[0], untrusting, 2);
    assert_eq!(r.connections.established, 0, "{}", r.human());
    let mut anonymous = transport(dir, "mtls");
    anonymous.tls = Some(tls_options(dir, false));
    let r = conn(ports[1], anonymous, 2);
    assert_eq!(r.connections.established, 0, "{}", r.human());
    let mut insecure = transport(other, "wss");
    insecure.tls = Some(TlsOptions {
        insecure: true,
        ..TlsOptions::default()
    });
    let r = conn(ports[3], insecure, 2);
    assert_eq!(r.connections.established, 2, "{}", r.human());
}

#[test]
fn petrel_over_tls_mtls_websocket_and_secure_websocket() {
    let dir = Scratch::new("petrel");
    let other = Scratch::new("petrel-other");
    certificates(&dir, "Petrel bench CA");
    certificates(&other, "Another CA");
    let Some((broker, ports)) = start_petrel(&dir) else {
        return;
    };
    exercise(&broker, &ports, &dir);
    refusals(&ports, &dir, &other);
}

#[test]
fn mosquitto_over_tls_mtls_websocket_and_secure_websocket() {
    let dir = Scratch::new("mosquitto");
    let other = Scratch::new("mosquitto-other");
    certificates(&dir, "Petrel bench CA");
    certificates(&other, "Another CA");
    let Some((broker, ports)) = start_mosquitto(&dir) else {
        return;
    };
    exercise(&broker, &ports, &dir);
    refusals(&ports, &dir, &other);
}
