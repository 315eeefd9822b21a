//! Starts the real `petrel` binary on a free loopback port and stops it when dropped, and
//! runs the real mosquitto command-line clients against it.

// Each test binary uses a different part of this module, and `pub` here means "for the
// test files", which the crate-level lint cannot see.
#![allow(dead_code, unreachable_pub)]

pub mod raw;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running broker process.
pub struct Broker {
    child: Child,
    pub addr: SocketAddr,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// The directory it runs in, removed with it.
    scratch: std::path::PathBuf,
}

/// A fresh directory, unique to this process and call.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("petrel-test-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

impl Broker {
    /// `petrel --listen 127.0.0.1:0` with two workers (so cross-shard paths run too).
    pub fn start() -> Broker {
        Broker::start_with(&["--workers", "2"])
    }

    pub fn start_with(args: &[&str]) -> Broker {
        let mut command = Command::new(env!("CARGO_BIN_EXE_petrel"));
        command
            .args(["--listen", "127.0.0.1:0", "--log-level", "info"])
            .args(args);
        Broker::spawn(command)
    }

    /// `petrel proxy --listen 127.0.0.1:0` with these arguments (upstreams, config file).
    pub fn start_proxy(args: &[&str]) -> Broker {
        Broker::start_proxy_listening(args, 1).0
    }

    /// [`Broker::start_proxy`] whose configuration adds `[[listener]]`s: the proxy and
    /// every address, the `--listen` one first.
    pub fn start_proxy_listening(args: &[&str], listeners: usize) -> (Broker, Vec<SocketAddr>) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_petrel"));
        command
            .args(["proxy", "--listen", "127.0.0.1:0", "--log-level", "info"])
            .args(args);
        Broker::spawn_listening(command, listeners)
    }

    /// `petrel --config FILE` whose file has `listeners` TCP listeners: the broker and
    /// each listener's address, in the file's order.
    pub fn start_config(config: &std::path::Path, listeners: usize) -> (Broker, Vec<SocketAddr>) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_petrel"));
        command
            .args(["--log-level", "info", "--config"])
            .arg(config);
        Broker::spawn_listening(command, listeners)
    }

    fn spawn(command: Command) -> Broker {
        Broker::spawn_listening(command, 1).0
    }

    /// Starts the process and reads the `listening on` line of each of its listeners.
    ///
    /// It runs in a scratch directory of its own, removed when it is dropped: the default
    /// `data_dir` (`data`) is then the broker's alone, and tests share no stored state.
    fn spawn_listening(mut command: Command, listeners: usize) -> (Broker, Vec<SocketAddr>) {
        let scratch = scratch_dir("broker");
        let mut child = command
            .current_dir(&scratch)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start petrel");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for _ in 0..listeners {
            let line = match lines.next() {
                Some(line) => line.expect("read stdout"),
                None => {
                    let mut err = String::new();
                    if let Some(mut pipe) = child.stderr.take() {
                        let _ = pipe.read_to_string(&mut err);
                    }
                    panic!("petrel printed nothing; stderr:\n{err}");
                }
            };
            addrs.push(
                line.strip_prefix("listening on ")
                    .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                    .parse()
                    .expect("address"),
            );
        }
        let addr = addrs[0];
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        (
            Broker {
                child,
                addr,
                stderr,
                scratch,
            },
            addrs,
        )
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the broker logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGHUP (the broker reloads its TLS, password and ACL files; the proxy
    /// re-reads its configuration).
    pub fn hangup(&self) {
        let _ = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status();
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "petrel did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// A running `mosquitto_sub`. Its output is read as it comes (a full pipe would stall it
/// and make it the slow subscriber), and handed over when it ends.
pub struct Sub {
    child: Child,
    output: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Sub {
    /// `mosquitto_sub -v` on `broker` with extra arguments; returns once it has its SUBACK
    /// (or has ended), so publishes after this are not missed.
    pub fn start(broker: &Broker, args: &[&str]) -> Sub {
        Sub::start_on(broker.addr.port(), args)
    }

    /// [`Sub::start`] on any broker's port (a mosquitto the test started, say).
    pub fn start_on(port: u16, args: &[&str]) -> Sub {
        // -d: its debug lines say when the SUBACK came; `lines` leaves them out. It flushes
        // only its messages, so stdbuf (coreutils) makes the debug lines come as written.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub"])
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-v", "-d"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (apt-get install mosquitto-clients)");
        let mut stdout = child.stdout.take().expect("stdout");
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = output.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        // A sleep here was too short on a loaded machine. A refused connection or
        // subscription ends the process (or its -W does) instead of subscribing.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !output.lock().unwrap().contains("\nSubscribed (mid: ")
            && matches!(child.try_wait(), Ok(None))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        Sub {
            child,
            output,
            reader: Some(reader),
        }
    }

    /// Whether it got its SUBACK (`start` returns before that only if it ended).
    pub fn subscribed(&self) -> bool {
        self.output.lock().unwrap().contains("\nSubscribed (mid: ")
    }

    /// Waits for it to exit (it should have a -C count or -W timeout) and returns its lines.
    pub fn lines(mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.so_far()
    }

    /// The lines printed so far, while it goes on running.
    pub fn so_far(&self) -> Vec<String> {
        let out = self.output.lock().unwrap().clone();
        out.lines()
            .filter(|line| !is_debug_line(line))
            .map(str::to_string)
            .collect()
    }

    /// Kills it abruptly (no DISCONNECT), as a crashed client would end.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One of `mosquitto_sub -d`'s lines: "Client ID sending SUBSCRIBE (...)", "Client ID
/// received PUBLISH (...)", "Subscribed (mid: 1): 0", "Received DISCONNECT (152)", and
/// libmosquitto's warnings and errors (without -d they are not on stdout at all).
fn is_debug_line(line: &str) -> bool {
    let prefixes = [
        "Subscribed (mid: ",
        "Received DISCONNECT (",
        "Warning: ",
        "Error: ",
    ];
    if prefixes.iter().any(|prefix| line.starts_with(prefix)) {
        return true;
    }
    let Some(rest) = line.strip_prefix("Client ") else {
        return false;
    };
    let Some((_id, rest)) = rest.split_once(' ') else {
        return false;
    };
    let Some(rest) = rest
        .strip_prefix("sending ")
        .or_else(|| rest.strip_prefix("received "))
    else {
        return false;
    };
    let packet = rest.split(' ').next().unwrap_or("");
    !packet.is_empty() && packet.bytes().all(|b| b.is_ascii_uppercase())
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `mosquitto_pub` to completion; panics if it fails.
pub fn publish(broker: &Broker, args: &[&str]) {
    publish_on(broker.addr.port(), args);
}

/// [`publish`] to any broker's port.
pub fn publish_on(port: u16, args: &[&str]) {
    let output = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("mosquitto_pub (apt-get install mosquitto-clients)");
    assert!(
        output.status.success(),
        "mosquitto_pub {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A client speaking raw MQTT through the codec, for what the command-line clients cannot
/// do: send garbage, never read, see exact packets.
pub struct RawClient {
    pub stream: std::net::TcpStream,
    pub version: petrel_codec::ProtocolVersion,
    inbox: Vec<u8>,
}

impl RawClient {
    pub fn connect(
        broker: &Broker,
        version: petrel_codec::ProtocolVersion,
        client_id: &str,
    ) -> RawClient {
        let stream = std::net::TcpStream::connect(broker.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut client = RawClient {
            stream,
            version,
            inbox: Vec::new(),
        };
        client.send(&petrel_codec::Packet::Connect(petrel_codec::Connect {
            protocol_version: version,
            clean_start: true,
            keep_alive: 0,
            properties: petrel_codec::Properties::default(),
            client_id,
            will: None,
            username: None,
            password: None,
        }));
        let connack = client.next_packet_type();
        assert_eq!(connack, Some(petrel_codec::PacketType::ConnAck));
        client
    }

    /// A client on a stream that is already connected (and has sent nothing).
    pub fn from_stream(
        stream: std::net::TcpStream,
        version: petrel_codec::ProtocolVersion,
    ) -> RawClient {
        RawClient {
            stream,
            version,
            inbox: Vec::new(),
        }
    }

    /// Writes bytes as they are (garbage, a malformed packet).
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send(&mut self, packet: &petrel_codec::Packet<'_>) {
        use std::io::Write;
        let mut buf = vec![0; packet.encoded_len(self.version).unwrap()];
        packet.encode(self.version, &mut buf).unwrap();
        self.stream.write_all(&buf).expect("write");
    }

    /// The type (and for a DISCONNECT, the reason) of the next packet, or `None` at EOF.
    pub fn next_packet(
        &mut self,
    ) -> Option<(petrel_codec::PacketType, Option<petrel_codec::ReasonCode>)> {
        let decoder = petrel_codec::Decoder::new(self.version);
        loop {
            if let Ok(petrel_codec::Decoded::Packet { packet, len }) = decoder.decode(&self.inbox) {
                let reason = match packet {
                    petrel_codec::Packet::Disconnect(d) => Some(d.reason_code),
                    petrel_codec::Packet::ConnAck(c) => Some(c.reason_code),
                    _ => None,
                };
                let kind = packet.packet_type();
                self.inbox.drain(..len);
                return Some((kind, reason));
            }
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.inbox.extend_from_slice(&buf[..n]),
            }
        }
    }

    pub fn next_packet_type(&mut self) -> Option<petrel_codec::PacketType> {
        self.next_packet().map(|(kind, _)| kind)
    }
}
