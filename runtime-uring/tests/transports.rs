//! The real `petrel` binary's TLS, mTLS, WebSocket and secure WebSocket listeners against
//! real clients: mosquitto_pub / mosquitto_sub (OpenSSL), paho-mqtt Python, and the `mqtt`
//! package from npm under node. Certificates are made at test time (rcgen) in the target
//! directory; nothing secret is committed.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Broker, Sub};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("transports-{name}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A test certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).expect("CA").pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// Writes the CA certificate to `path`.
    fn write(&self, path: &Path) {
        fs::write(path, &self.pem).expect("write CA");
    }

    /// A server certificate for `names` (host names or IP addresses), written as
    /// `stem.pem` and `stem.key`.
    fn server(&self, dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, stem);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(dir, stem, params)
    }

    /// A client certificate with this common name and serial number.
    fn client(&self, dir: &Path, cn: &str, serial: u64) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Petrel tests");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(SerialNumber::from(serial));
        self.issue(dir, cn, params)
    }

    fn issue(&self, dir: &Path, stem: &str, params: CertificateParams) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let cert_path = dir.join(format!("{stem}.pem"));
        let key_path = dir.join(format!("{stem}.key"));
        fs::write(&cert_path, cert.pem()).expect("write cert");
        fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }

    /// A CRL revoking these serial numbers, written to `path`.
    fn crl(&self, path: &Path, revoked: &[u64]) {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).expect("CRL");
        fs::write(path, crl.pem().expect("CRL PEM")).expect("write CRL");
    }
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Starts petrel with this configuration text; returns it and each listener's address.
fn start(dir: &Path, config: &str, listeners: usize) -> (Broker, Vec<SocketAddr>) {
    let path = dir.join("petrel.toml");
    fs::write(&path, config).expect("write config");
    Broker::start_config(&path, listeners)
}

/// `mosquitto_pub` to `host:port` with these TLS arguments; its output.
fn mosquitto_pub(host: &str, port: u16, tls: &[&str], topic: &str, message: &str) -> Output {
    Command::new("mosquitto_pub")
        .args(["-h", host, "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", message, "-i", &format!("pub-{topic}")])
        .args(tls)
        .output()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)")
}

/// A message published with these TLS arguments reaches a subscriber connected with them.
fn assert_roundtrip(broker: &Broker, port: u16, host: &str, tls: &[&str], topic: &str) {
    let port_arg = port.to_string();
    let mut sub_args = vec![
        "-h", host, "-p", &port_arg, "-t", topic, "-C", "1", "-W", "30",
    ];
    sub_args.extend_from_slice(tls);
    let sub = Sub::start(broker, &sub_args);
    // `Sub::start` waited for the SUBACK; retained all the same, so the message does not
    // hang on that. -W counts from its start, TLS handshake included (slow in a debug
    // build on a busy machine), and bounds only a failure: -C 1 ends it on the message.
    let mut pub_args = vec!["-r"];
    pub_args.extend_from_slice(tls);
    let output = mosquitto_pub(host, port, &pub_args, topic, "over-tls");
    assert!(
        output.status.success(),
        "mosquitto_pub {tls:?} failed: {}\nbroker log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        broker.log()
    );
    assert_eq!(
        sub.lines(),
        vec![format!("{topic} over-tls")],
        "broker log:\n{}",
        broker.log()
    );
}

/// Whether `openssl s_client` with this version flag completes a handshake.
fn openssl_handshake(addr: SocketAddr, version: &str) -> bool {
    let output = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), version, "-brief"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl (apt-get install openssl)");
    let text = String::from_utf8_lossy(&output.stderr);
    text.contains("CONNECTION ESTABLISHED")
}

fn assert_refused(host: &str, port: u16, tls: &[&str], topic: &str) {
    let output = mosquitto_pub(host, port, tls, topic, "refused");
    assert!(
        !output.status.success(),
        "mosquitto_pub {tls:?} should have been refused"
    );
}

#[test]
fn tls_1_2_and_1_3_carry_mqtt_between_mosquitto_clients() {
    let dir = scratch("tls");
    let ca = Ca::new("Petrel test CA");
    ca.write(&dir.join("ca.pem"));
    let (cert, key) = ca.server(&dir, "server", &["127.0.0.1"]);
    let config = format!(
        "workers = 2\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         tls = {{ certs = [{{ cert = \"{}\", key = \"{}\" }}] }}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         tls = {{ certs = [{{ cert = \"{0}\", key = \"{1}\" }}], min_version = \"1.3\" }}\n",
        p(&cert),
        p(&key),
    );
    let (broker, addrs) = start(&dir, &config, 2);
    let cafile = dir.join("ca.pem");
    // mosquitto's `--tls-version tlsv1.2` is a floor, not a ceiling (it negotiates 1.3
    // here), so TLS 1.2 itself is driven by paho, held to 1.2, and by openssl s_client.
    let tls13 = ["--cafile", p(&cafile), "--tls-version", "tlsv1.3"];
    assert_roundtrip(&broker, addrs[0].port(), "127.0.0.1", &tls13, "tls/13");
    paho("tls12", addrs[0].port(), Some(&cafile), "");
    assert!(openssl_handshake(addrs[0], "-tls1_2"));
    assert!(openssl_handshake(addrs[0], "-tls1_3"));
    // The 1.3-only listener refuses 1.2 and takes 1.3.
    assert!(!openssl_handshake(addrs[1], "-tls1_2"));
    assert!(openssl_handshake(addrs[1], "-tls1_3"));
    assert_roundtrip(&broker, addrs[1].port(), "127.0.0.1", &tls13, "tls/13-only");
    // A client that does not trust the CA gives up.
    let other = Ca::new("Someone else");
    other.write(&dir.join("other.pem"));
    let untrusted = dir.join("other.pem");
    assert_refused(
        "127.0.0.1",
        addrs[0].port(),
        &["--cafile", p(&untrusted)],
        "tls/untrusted",
    );
    // Plain MQTT on the TLS port is not MQTT: the broker drops it, and stays up.
    assert_refused("127.0.0.1", addrs[0].port(), &[], "tls/plain");
    assert_roundtrip(&broker, addrs[0].port(), "127.0.0.1", &tls13, "tls/after");
}

#[test]
fn sni_picks_the_certificate_for_the_name_the_client_asks_for() {
    let dir = scratch("sni");
    let ca = Ca::new("Petrel test CA");
    ca.write(&dir.join("ca.pem"));
    // The default certificate covers only the address; the second only `localhost`.
    let (ip_cert, ip_key) = ca.server(&dir, "by-address", &["127.0.0.1"]);
    let (name_cert, name_key) = ca.server(&dir, "by-name", &["localhost"]);
    let config = format!(
        "workers = 2\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         tls = {{ certs = [{{ cert = \"{}\", key = \"{}\" }}, {{ cert = \"{}\", key = \"{}\" }}] }}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         tls = {{ certs = [{{ cert = \"{0}\", key = \"{1}\" }}] }}\n",
        p(&ip_cert),
        p(&ip_key),
        p(&name_cert),
        p(&name_key),
    );
    let (broker, addrs) = start(&dir, &config, 2);
    let cafile = dir.join("ca.pem");
    let tls = ["--cafile", p(&cafile)];
    // mosquitto checks the host name: `-h localhost` (sent as SNI) only succeeds if the
    // broker chose the second certificate, and `-h 127.0.0.1` (no SNI) gets the first.
    assert_roundtrip(&broker, addrs[0].port(), "localhost", &tls, "sni/name");
    assert_roundtrip(&broker, addrs[0].port(), "127.0.0.1", &tls, "sni/address");
    // The control: without a certificate for `localhost`, the same client gives up.
    assert_refused("localhost", addrs[1].port(), &tls, "sni/none");
}

#[test]
fn client_certificates_are_required_verified_revoked_and_name_the_user() {
    let dir = scratch("mtls");
    let ca = Ca::new("Petrel test CA");
    ca.write(&dir.join("ca.pem"));
    let (cert, key) = ca.server(&dir, "server", &["127.0.0.1"]);
    let (alice_cert, alice_key) = ca.client(&dir, "alice", 1001);
    let (mallory_cert, mallory_key) = ca.client(&dir, "mallory", 1002);
    let stranger_dir = dir.join("stranger");
    fs::create_dir_all(&stranger_dir).unwrap();
    let (stranger_cert, stranger_key) = Ca::new("Elsewhere").client(&stranger_dir, "eve", 7);
    let crl = dir.join("crl.pem");
    ca.crl(&crl, &[1002]);
    let cafile = dir.join("ca.pem");
    // A password file that does not know alice: the name her certificate proves needs no
    // password. Anonymous clients are refused everywhere: a certificate is a name.
    let passwords = dir.join("passwords");
    let made = Command::new("mosquitto_passwd")
        .args(["-c", "-b", p(&passwords), "bob", "secret"])
        .status()
        .expect("mosquitto_passwd");
    assert!(made.success());
    let config = format!(
        "workers = 2\nanonymous = \"deny\"\n\
         [auth]\npassword_file = \"{}\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         tls = {{ certs = [{{ cert = \"{}\", key = \"{}\" }}], client_ca = \"{}\", \
         crl = \"{}\", cert_username = \"cn\", watch_interval = 0 }}\n",
        p(&passwords),
        p(&cert),
        p(&key),
        p(&cafile),
        p(&crl),
    );
    let (broker, addrs) = start(&dir, &config, 1);
    let port = addrs[0].port();
    let as_client = |cert: &Path, key: &Path| -> Vec<String> {
        vec![
            "--cafile".into(),
            p(&cafile).into(),
            "--cert".into(),
            p(cert).into(),
            "--key".into(),
            p(key).into(),
        ]
    };
    let alice = as_client(&alice_cert, &alice_key);
    let alice: Vec<&str> = alice.iter().map(String::as_str).collect();
    assert_roundtrip(&broker, port, "127.0.0.1", &alice, "mtls/alice");
    let log = broker.log();
    let connected = log
        .lines()
        .find(|l| l.contains("connected") && l.contains("pub-mtls/alice"))
        .unwrap_or_else(|| panic!("no connect line:\n{log}"));
    assert!(
        connected.contains("username=\"alice\"") || connected.contains("username=alice"),
        "{connected}"
    );
    assert!(connected.contains("O=Petrel tests,CN=alice"), "{connected}");

    assert_refused("127.0.0.1", port, &["--cafile", p(&cafile)], "mtls/none");
    let stranger = as_client(&stranger_cert, &stranger_key);
    let stranger: Vec<&str> = stranger.iter().map(String::as_str).collect();
    assert_refused("127.0.0.1", port, &stranger, "mtls/stranger");
    let mallory = as_client(&mallory_cert, &mallory_key);
    let mallory: Vec<&str> = mallory.iter().map(String::as_str).collect();
    assert_refused("127.0.0.1", port, &mallory, "mtls/revoked");

    // A new CRL that revokes alice too takes effect on SIGHUP, without a restart.
    ca.crl(&crl, &[1001, 1002]);
    broker.hangup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while mosquitto_pub("127.0.0.1", port, &alice, "mtls/again", "x")
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "alice still accepted after the CRL reload:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn server_certificates_reload_on_sighup_and_on_change() {
    let dir = scratch("reload");
    let old_ca = Ca::new("Old CA");
    let new_ca = Ca::new("New CA");
    old_ca.write(&dir.join("old-ca.pem"));
    new_ca.write(&dir.join("new-ca.pem"));
    let hup_dir = dir.join("hup");
    let watch_dir = dir.join("watch");
    fs::create_dir_all(&hup_dir).unwrap();
    fs::create_dir_all(&watch_dir).unwrap();
    let (hup_cert, hup_key) = old_ca.server(&hup_dir, "server", &["127.0.0.1"]);
    let (watch_cert, watch_key) = old_ca.server(&watch_dir, "server", &["127.0.0.1"]);
    let config = format!(
        "workers = 2\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         tls = {{ certs = [{{ cert = \"{}\", key = \"{}\" }}], watch_interval = 0 }}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         tls = {{ certs = [{{ cert = \"{}\", key = \"{}\" }}], watch_interval = 1 }}\n",
        p(&hup_cert),
        p(&hup_key),
        p(&watch_cert),
        p(&watch_key),
    );
    let (broker, addrs) = start(&dir, &config, 2);
    let old = dir.join("old-ca.pem");
    let new = dir.join("new-ca.pem");
    let trusting_old = ["--cafile", p(&old)];
    let trusting_new = ["--cafile", p(&new)];
    for addr in &addrs {
        assert_roundtrip(
            &broker,
            addr.port(),
            "127.0.0.1",
            &trusting_old,
            "reload/before",
        );
    }
    // A client connected before the reload stays connected through it.
    let port = addrs[0].port().to_string();
    let mut args = vec![
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "reload/kept",
        "-C",
        "1",
    ];
    // It must outlast both reloads below (each waits up to 15 s on a slow machine); -C 1
    // ends it as soon as its message comes.
    args.extend_from_slice(&["-W", "60"]);
    args.extend_from_slice(&trusting_old);
    let kept = Sub::start(&broker, &args);

    new_ca.server(&hup_dir, "server", &["127.0.0.1"]);
    new_ca.server(&watch_dir, "server", &["127.0.0.1"]);

    // The watched listener picks the new files up by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !mosquitto_pub("127.0.0.1", addrs[1].port(), &trusting_new, "reload/w", "x")
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the changed files were not reloaded:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The other waits for SIGHUP.
    assert_refused("127.0.0.1", addrs[0].port(), &trusting_new, "reload/early");
    assert_roundtrip(
        &broker,
        addrs[0].port(),
        "127.0.0.1",
        &trusting_old,
        "reload/still",
    );
    broker.hangup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mosquitto_pub("127.0.0.1", addrs[0].port(), &trusting_new, "reload/h", "x")
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_refused("127.0.0.1", addrs[0].port(), &trusting_old, "reload/old");
    let new_port = addrs[0].port();
    let output = mosquitto_pub("127.0.0.1", new_port, &trusting_new, "reload/kept", "kept");
    assert!(output.status.success());
    assert_eq!(kept.lines(), vec!["reload/kept kept"]);

    // A broken file is reported and the working certificate stays.
    fs::write(&hup_cert, "not a certificate").unwrap();
    broker.hangup();
    std::thread::sleep(Duration::from_millis(300));
    assert!(broker.log().contains("not reloaded"), "{}", broker.log());
    assert_roundtrip(
        &broker,
        addrs[0].port(),
        "127.0.0.1",
        &trusting_new,
        "reload/kept-new",
    );
}

fn paho(mode: &str, port: u16, cafile: Option<&Path>, path: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/paho_transports.py");
    let output = Command::new("python3")
        .args([script, mode, &port.to_string(), cafile.map_or("", p), path])
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "paho {mode} failed (pip install paho-mqtt):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn node(url: &str, cafile: Option<&Path>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node");
    assert!(
        Path::new(dir).join("node_modules/mqtt").exists(),
        "the mqtt npm package is missing: npm ci --prefix runtime-uring/tests/node"
    );
    let mut command = Command::new("node");
    command.arg(format!("{dir}/ws_client.js")).arg(url);
    if let Some(cafile) = cafile {
        command.arg(cafile);
    }
    let output = command.output().expect("node (apt-get install nodejs)");
    assert!(
        output.status.success(),
        "node mqtt {url} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn websocket_broker(name: &str) -> (PathBuf, Broker, Vec<SocketAddr>) {
    let dir = scratch(name);
    let ca = Ca::new("Petrel test CA");
    ca.write(&dir.join("ca.pem"));
    let (cert, key) = ca.server(&dir, "server", &["127.0.0.1", "localhost"]);
    let config = format!(
        "workers = 2\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nwebsocket = {{ path = \"/mqtt\" }}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\nwebsocket = {{ path = \"/secure\" }}\n\
         tls = {{ certs = [{{ cert = \"{}\", key = \"{}\" }}] }}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\ntls = {{ certs = [{{ cert = \"{0}\", key = \"{1}\" }}] }}\n",
        p(&cert),
        p(&key),
    );
    let (broker, addrs) = start(&dir, &config, 3);
    (dir, broker, addrs)
}

#[test]
fn paho_python_over_tls_websocket_and_secure_websocket() {
    let (dir, broker, addrs) = websocket_broker("paho");
    let cafile = dir.join("ca.pem");
    paho("ws", addrs[0].port(), None, "/mqtt");
    paho("wss", addrs[1].port(), Some(&cafile), "/secure");
    paho("tls", addrs[2].port(), Some(&cafile), "");
    drop(broker);
}

#[test]
fn the_mqtt_npm_package_over_websocket_and_secure_websocket() {
    let (dir, broker, addrs) = websocket_broker("node");
    node(&format!("ws://127.0.0.1:{}/mqtt", addrs[0].port()), None);
    node(
        &format!("wss://127.0.0.1:{}/secure", addrs[1].port()),
        Some(&dir.join("ca.pem")),
    );
    drop(broker);
}

/// Sends an HTTP request and returns the status line of the answer.
fn http_status(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

fn upgrade(path: &str, protocol: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
    )
}

#[test]
fn websocket_handshakes_and_frames_that_are_not_mqtt_are_refused() {
    let (_dir, broker, addrs) = websocket_broker("ws-refusals");
    let ws = addrs[0];
    assert!(http_status(ws, &upgrade("/other", "mqtt")).contains(" 404 "));
    assert!(http_status(ws, &upgrade("/mqtt", "chat")).contains(" 400 "));
    assert!(http_status(ws, "GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n").contains(" 400 "));

    // After a good handshake, a text frame is answered with close 1003 [MQTT-6.0.0-1].
    let mut stream = TcpStream::connect(ws).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(upgrade("/mqtt", "mqtt").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("handshake answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    assert!(head.contains("Sec-WebSocket-Protocol: mqtt"));
    // "Hello" as a masked text frame (RFC 6455 section 5.7).
    stream
        .write_all(&[
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ])
        .unwrap();
    let mut close = [0u8; 4];
    stream.read_exact(&mut close).expect("close frame");
    assert_eq!(close, [0x88, 0x02, 0x03, 0xEB]);

    // A ping, then MQTT in a masked binary frame: CONNECT then DISCONNECT. The answer is
    // the pong, the CONNACK in a binary frame, then a normal close frame (1000) as the
    // broker ends the stream.
    let mut stream = TcpStream::connect(ws).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(upgrade("/mqtt", "mqtt").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("handshake answer");
        head.push(byte[0]);
    }
    let mqtt = [
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00, 0xE0,
        0x00,
    ];
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![0x89, 0x82];
    frame.extend_from_slice(&mask);
    frame.extend(b"hi".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame.extend_from_slice(&[0x82, 0x80 | mqtt.len() as u8]);
    frame.extend_from_slice(&mask);
    frame.extend(mqtt.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert_eq!(
        answer,
        [0x8A, 0x02, b'h', b'i', 0x82, 0x04, 0x20, 0x02, 0x00, 0x00, 0x88, 0x02, 0x03, 0xE8],
        "broker log:\n{}",
        broker.log()
    );
    drop(broker);
}
