//! `petrel proxy` in front of two real mosquitto brokers, driven by mosquitto_pub and
//! mosquitto_sub, paho-mqtt and raw MQTT clients.

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{publish, publish_on, Broker, RawClient, Sub};
use petrel_codec::{Packet, PacketType, ProtocolVersion, ReasonCode};
use petrel_state::proxy::{Balancer, HealthConfig};

/// A mosquitto broker on a free loopback port, stopped when dropped.
struct Mosquitto {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let port = free_port();
        Mosquitto::start_on(port)
    }

    fn start_on(port: u16) -> Mosquitto {
        let dir =
            std::env::temp_dir().join(format!("petrel-proxy-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (apt-get install mosquitto)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto { child, port, dir }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The proxy in front of `upstreams`, with extra configuration lines (written to a file).
fn proxy(upstreams: &[&Mosquitto], config: &str) -> (Broker, PathBuf) {
    let (proxy, path, _) = proxy_listening(upstreams, config, 1);
    (proxy, path)
}

/// [`proxy`] with `[[listener]]`s in `config`: also every listening address.
fn proxy_listening(
    upstreams: &[&Mosquitto],
    config: &str,
    listeners: usize,
) -> (Broker, PathBuf, Vec<std::net::SocketAddr>) {
    let path = std::env::temp_dir().join(format!(
        "petrel-proxy-test-{}-{}.toml",
        std::process::id(),
        free_port()
    ));
    write_config(&path, upstreams, config);
    let (proxy, addrs) = Broker::start_proxy_listening(
        &["--workers", "2", "--config", path.to_str().unwrap()],
        listeners,
    );
    (proxy, path, addrs)
}

fn write_config(path: &PathBuf, upstreams: &[&Mosquitto], config: &str) {
    let list: Vec<String> = upstreams
        .iter()
        .map(|m| format!("\"{}\"", m.address()))
        .collect();
    let text = format!(
        "upstreams = [{}]\n{config}\n[health]\ninterval_ms = 200\ntimeout_ms = 500\n",
        list.join(", ")
    );
    std::fs::write(path, text).expect("write proxy config");
}

/// `n` client ids starting with `prefix` that the proxy places on `on` (the same
/// rendezvous hashing, asked of the state crate).
fn ids_on(upstreams: &[&Mosquitto], on: &Mosquitto, prefix: &str, n: usize) -> Vec<String> {
    let mut balancer = Balancer::new(HealthConfig::default());
    let addresses: Vec<String> = upstreams.iter().map(|m| m.address()).collect();
    balancer.set_upstreams(petrel_state::Instant::ZERO, &addresses);
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|id| balancer.choose(id) == Some(on.address().as_str()))
        .take(n)
        .collect()
}

#[test]
fn pub_sub_at_every_qos_over_both_versions() {
    let (a, b) = (Mosquitto::start(), Mosquitto::start());
    let (proxy, _config) = proxy(&[&a, &b], "");
    for version in ["mqttv311", "mqttv5"] {
        for qos in ["0", "1", "2"] {
            // Subscriber and publisher on the same upstream: the two are not bridged.
            let ids = ids_on(&[&a, &b], &b, &format!("{version}-{qos}-"), 2);
            let topic = format!("pq/{version}/{qos}");
            let sub = Sub::start(
                &proxy,
                &[
                    "-V", version, "-q", qos, "-i", &ids[0], "-t", &topic, "-C", "3", "-W", "10",
                ],
            );
            for n in 0..3 {
                publish(
                    &proxy,
                    &[
                        "-V",
                        version,
                        "-q",
                        qos,
                        "-i",
                        &ids[1],
                        "-t",
                        &topic,
                        "-m",
                        &format!("m{n}"),
                    ],
                );
            }
            let lines = sub.lines();
            assert_eq!(
                lines,
                vec![
                    format!("{topic} m0"),
                    format!("{topic} m1"),
                    format!("{topic} m2")
                ],
                "{version} QoS {qos}"
            );
        }
    }
}

#[test]
fn paho_clients_through_the_proxy() {
    let (a, b) = (Mosquitto::start(), Mosquitto::start());
    let (proxy, _config) = proxy(&[&a, &b], "");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/paho_client.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(proxy.port())
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "paho: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn tenant_prefix_round_trip() {
    let upstream = Mosquitto::start();
    let (proxy, _config) = proxy(&[&upstream], "tenant_prefix = \"t/{username}/\"");
    // What the upstream sees: only prefixed topics.
    let raw = Sub::start_on(upstream.port, &["-t", "#", "-C", "2", "-W", "10"]);
    let alice = Sub::start(
        &proxy,
        &[
            "-V", "mqttv5", "-u", "alice", "-t", "a/#", "-q", "1", "-C", "2", "-W", "10",
        ],
    );
    let bob = Sub::start(&proxy, &["-u", "bob", "-t", "#", "-W", "3"]);
    publish(
        &proxy,
        &["-u", "alice", "-t", "a/b", "-m", "from-alice", "-q", "1"],
    );
    // A message put straight into alice's tree upstream comes down without the prefix.
    publish_on(upstream.port, &["-t", "t/alice/a/c", "-m", "from-upstream"]);
    assert_eq!(
        raw.lines(),
        vec!["t/alice/a/b from-alice", "t/alice/a/c from-upstream"]
    );
    assert_eq!(alice.lines(), vec!["a/b from-alice", "a/c from-upstream"]);
    assert_eq!(
        bob.lines(),
        Vec::<String>::new(),
        "bob sees nothing of alice's"
    );
    // Without a user name there is no tenant: refused.
    let refused = Command::new("mosquitto_pub")
        .args(["-p", &proxy.port(), "-t", "x", "-m", "x"])
        .output()
        .expect("mosquitto_pub");
    assert!(!refused.status.success());
}

#[test]
fn anonymous_clients_are_refused_with_not_authorized() {
    let upstream = Mosquitto::start();
    let (proxy, _config) = proxy(&[&upstream], "allow_anonymous = false");
    for version in ["mqttv311", "mqttv5"] {
        let output = Command::new("mosquitto_pub")
            .args(["-p", &proxy.port(), "-V", version, "-t", "x", "-m", "x"])
            .output()
            .expect("mosquitto_pub");
        let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
        assert!(!output.status.success(), "{version}");
        assert!(stderr.contains("not author"), "{version}: {stderr}");
    }
    let mut raw = raw_connect(&proxy, ProtocolVersion::V5, "anon");
    assert_eq!(
        raw.next_packet(),
        Some((PacketType::ConnAck, Some(ReasonCode::NotAuthorized)))
    );
    assert_eq!(raw.next_packet(), None, "then closed");
    publish(&proxy, &["-u", "someone", "-t", "x", "-m", "x"]);
}

#[test]
fn the_password_file_refuses_a_wrong_password() {
    let upstream = Mosquitto::start();
    let passwords = std::env::temp_dir().join(format!(
        "petrel-proxy-test-{}-{}.passwd",
        std::process::id(),
        free_port()
    ));
    let made = Command::new("mosquitto_passwd")
        .arg("-c")
        .arg("-b")
        .arg(&passwords)
        .args(["alice", "secret"])
        .status()
        .expect("mosquitto_passwd (apt-get install mosquitto)");
    assert!(made.success());
    let (proxy, _config) = proxy(
        &[&upstream],
        &format!(
            "[auth]\npassword_file = \"{}\"",
            passwords.to_str().unwrap()
        ),
    );
    for version in ["mqttv311", "mqttv5"] {
        let output = Command::new("mosquitto_pub")
            .args(["-p", &proxy.port(), "-V", version, "-t", "x", "-m", "x"])
            .args(["-u", "alice", "-P", "wrong"])
            .output()
            .expect("mosquitto_pub");
        let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
        assert!(!output.status.success(), "{version}");
        assert!(
            stderr.contains("bad user name or password"),
            "{version}: {stderr}"
        );
    }
    publish(
        &proxy,
        &["-u", "alice", "-P", "secret", "-t", "x", "-m", "x"],
    );
    let _ = std::fs::remove_file(passwords);
}

/// A CONNECT sent without waiting for the answer (RawClient::connect insists on success).
fn raw_connect(proxy: &Broker, version: ProtocolVersion, client_id: &str) -> RawClient {
    let stream = TcpStream::connect(proxy.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut client = RawClient::from_stream(stream, version);
    client.send(&Packet::Connect(petrel_codec::Connect {
        protocol_version: version,
        clean_start: true,
        keep_alive: 0,
        properties: petrel_codec::Properties::default(),
        client_id,
        will: None,
        username: None,
        password: None,
    }));
    client
}

#[test]
fn a_client_id_always_lands_on_the_same_upstream() {
    let (a, b) = (Mosquitto::start(), Mosquitto::start());
    let (proxy, _config) = proxy(&[&a, &b], "");
    let on_a = ids_on(&[&a, &b], &a, "sticky-", 3);
    let on_b = ids_on(&[&a, &b], &b, "sticky-", 3);
    let watch_a = Sub::start_on(a.port, &["-t", "where/#", "-C", "6", "-W", "10"]);
    let watch_b = Sub::start_on(b.port, &["-t", "where/#", "-C", "6", "-W", "10"]);
    for _round in 0..2 {
        for id in on_a.iter().chain(&on_b) {
            publish(&proxy, &["-i", id, "-t", &format!("where/{id}"), "-m", "x"]);
        }
    }
    let expect = |ids: &[String]| -> Vec<String> {
        let mut lines: Vec<String> = ids
            .iter()
            .flat_map(|id| [format!("where/{id} x"), format!("where/{id} x")])
            .collect();
        lines.sort();
        lines
    };
    let mut seen_a = watch_a.lines();
    let mut seen_b = watch_b.lines();
    seen_a.sort();
    seen_b.sort();
    assert_eq!(seen_a, expect(&on_a));
    assert_eq!(seen_b, expect(&on_b));
}

#[test]
fn clients_of_a_dead_upstream_reconnect_to_a_live_one() {
    let (mut a, b) = (Mosquitto::start(), Mosquitto::start());
    let (mut proxy, _config) = proxy(&[&a, &b], "");
    let sub_id = &ids_on(&[&a, &b], &a, "failover-sub-", 1)[0];
    // mosquitto_sub reconnects (and subscribes again) by itself when its connection drops.
    let sub = Sub::start(
        &proxy,
        &["-i", sub_id, "-t", "fo/#", "-q", "1", "-C", "1", "-W", "20"],
    );
    a.kill();
    // Retained on b: the subscriber gets it once it has landed there.
    publish_on(b.port, &["-t", "fo/x", "-m", "on-b", "-q", "1", "-r"]);
    assert_eq!(sub.lines(), vec!["fo/x on-b"]);
    assert!(proxy.log().contains("upstream down"), "{}", proxy.log());
    // A live publish through the proxy from a client that hashes to the dead upstream.
    let moved = &ids_on(&[&a, &b], &a, "failover-pub-", 1)[0];
    let sub = Sub::start(
        &proxy,
        &["-i", sub_id, "-t", "fo/live", "-C", "1", "-W", "10"],
    );
    publish(
        &proxy,
        &["-i", moved, "-t", "fo/live", "-m", "live", "-q", "1"],
    );
    assert_eq!(sub.lines(), vec!["fo/live live"]);
    assert!(proxy.alive());
    // The health checks bring a restarted upstream back.
    let _a = Mosquitto::start_on(a.port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.log().contains("upstream up") {
        assert!(Instant::now() < deadline, "not back: {}", proxy.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reload_disconnects_only_the_clients_of_removed_upstreams() {
    let (a, b) = (Mosquitto::start(), Mosquitto::start());
    let (proxy, config) = proxy(&[&a, &b], "");
    let id_a = &ids_on(&[&a, &b], &a, "reload-", 1)[0];
    let id_b = &ids_on(&[&a, &b], &b, "reload-", 1)[0];
    let mut stays = RawClient::connect(&proxy, ProtocolVersion::V5, id_a);
    let mut goes = RawClient::connect(&proxy, ProtocolVersion::V5, id_b);
    write_config(&config, &[&a], "");
    proxy.hangup();
    assert_eq!(
        goes.next_packet(),
        Some((
            PacketType::Disconnect,
            Some(ReasonCode::AdministrativeAction)
        ))
    );
    assert_eq!(goes.next_packet(), None);
    stays.send(&Packet::PingReq);
    assert_eq!(stays.next_packet_type(), Some(PacketType::PingResp));
    // Its client id now lands on the remaining upstream.
    let mut back = RawClient::connect(&proxy, ProtocolVersion::V5, id_b);
    back.send(&Packet::PingReq);
    assert_eq!(back.next_packet_type(), Some(PacketType::PingResp));
}

#[test]
fn bad_input_closes_the_pair_not_the_proxy() {
    let upstream = Mosquitto::start();
    let (mut proxy, _config) = proxy(&[&upstream], "");
    // Not MQTT at all: closed without a word.
    let stream = TcpStream::connect(proxy.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut garbage = RawClient::from_stream(stream, ProtocolVersion::V5);
    garbage.send_bytes(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(garbage.next_packet(), None);
    // A connected 5.0 client sending a malformed PUBLISH hears why.
    let mut client = RawClient::connect(&proxy, ProtocolVersion::V5, "malformed");
    client.send_bytes(&[0x32, 0x01, 0x00]);
    assert_eq!(
        client.next_packet(),
        Some((PacketType::Disconnect, Some(ReasonCode::MalformedPacket)))
    );
    assert_eq!(client.next_packet(), None);
    assert!(proxy.alive());
    let sub = Sub::start(&proxy, &["-t", "ok", "-C", "1", "-W", "10"]);
    publish(&proxy, &["-t", "ok", "-m", "still"]);
    assert_eq!(sub.lines(), vec!["ok still"]);
}

#[test]
fn a_client_that_never_sends_connect_is_closed() {
    let upstream = Mosquitto::start();
    let (proxy, _config) = proxy(&[&upstream], "connect_timeout = 1");
    let stream = TcpStream::connect(proxy.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut silent = RawClient::from_stream(stream, ProtocolVersion::V5);
    let started = Instant::now();
    assert_eq!(silent.next_packet(), None);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed by the proxy, not the read timeout"
    );
}

/// A certificate authority and a server certificate for 127.0.0.1, made for the test.
fn certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir).expect("cert dir");
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "proxy test CA");
    let ca_pem = ca.self_signed(&ca_key).expect("CA").pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut server =
        CertificateParams::new(vec![String::from("127.0.0.1"), String::from("localhost")])
            .expect("params");
    server.distinguished_name.push(DnType::CommonName, "proxy");
    let cert = server.signed_by(&key, &issuer).expect("sign");
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca_pem).expect("write");
    std::fs::write(&paths.1, cert.pem()).expect("write");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write");
    paths
}

#[test]
fn tls_and_secure_websocket_terminate_at_the_proxy() {
    let (a, b) = (Mosquitto::start(), Mosquitto::start());
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("proxy-tls");
    let (ca, cert, key) = certificates(&dir);
    let tls = format!(
        "tls = {{ certs = [{{ cert = \"{}\", key = \"{}\" }}] }}",
        cert.display(),
        key.display()
    );
    let config = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n{tls}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n{tls}\nwebsocket = {{ path = \"/mqtt\" }}\n"
    );
    let (_proxy, _config, addrs) = proxy_listening(&[&a, &b], &config, 3);
    let (tls_port, wss_port) = (addrs[1].port().to_string(), addrs[2].port().to_string());
    let ids = ids_on(&[&a, &b], &a, "tls-", 2);
    let ca = ca.to_str().unwrap();
    let sub = Sub::start_on(
        addrs[1].port(),
        &[
            "--cafile", ca, "-i", &ids[0], "-t", "tls/x", "-q", "1", "-C", "1", "-W", "10",
        ],
    );
    // Retained, so a subscriber whose TLS handshake (slow in a debug build on a busy
    // machine) ends after the publish still gets it.
    let output = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &tls_port, "--cafile", ca, "-r"])
        .args(["-i", &ids[1], "-t", "tls/x", "-m", "secret", "-q", "1"])
        .output()
        .expect("mosquitto_pub");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(sub.lines(), vec!["tls/x secret"]);
    // paho-mqtt over secure WebSocket, 3.1.1 and 5.0, every QoS.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/paho_transports.py");
    let output = Command::new("python3")
        .args([script, "wss", &wss_port, ca, "/mqtt"])
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "paho wss: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
