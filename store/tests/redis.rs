//! The Redis store against a real `redis-server` (Debian `redis-server`), started on a free
//! loopback port with `appendfsync always` and killed with SIGKILL mid-life: what the
//! committer reported durable comes back.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{commits, session, Scratch};
use petrel_state::broker::{Durability, Storage};
use petrel_state::message::Message;
use petrel_store::{load, Clock, CommitSettings, Committer, RedisStore};

struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(dir: &std::path::Path, port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        // Listening is not ready: a restarted server answers -LOADING while it replays its
        // append-only file. Ready is when PING gets +PONG.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers_ping(port) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answers_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 64];
    stream.write_all(b"PING\r\n").is_ok()
        && stream
            .read(&mut reply)
            .is_ok_and(|n| reply[..n].starts_with(b"+PONG"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn committed_state_survives_a_killed_redis() {
    let dir = Scratch::new("redis");
    let port = free_port();
    let redis = RedisServer::start(&dir.0, port);
    let clock = Clock::new(Clock::unix_now());
    let (listener, committed) = commits();
    let committer = Committer::start(
        Box::new(RedisStore::open(&redis.url(), "petrel").unwrap()),
        CommitSettings {
            window: Duration::from_millis(2),
            durable: true,
        },
        clock,
        listener,
    )
    .unwrap();
    let mut shard = committer.shard(0);
    for i in 0..50 {
        shard.save_session(session(&format!("client-{i}"), 3600).view());
    }
    let mut retained = Message::new("status", &b"up"[..]);
    retained.retain = true;
    shard.set_retained("status", Some(&Arc::new(retained.clone())));
    assert_eq!(shard.commit(), Durability::Pending(1));
    shard.delete_session("client-0");
    assert_eq!(shard.commit(), Durability::Pending(2));
    let mut last = 0;
    while last < 2 {
        last = committed.recv_timeout(Duration::from_secs(5)).unwrap().1;
    }
    drop(shard);
    committer.finish();

    redis.kill();
    let redis = RedisServer::start(&dir.0, port);
    let mut store = RedisStore::open(&redis.url(), "petrel").unwrap();
    let loaded = load(&mut store, clock).unwrap();
    assert_eq!(loaded.state.sessions.len(), 49);
    let one = loaded
        .state
        .sessions
        .iter()
        .find(|r| r.session.client_id == "client-7")
        .unwrap();
    assert_eq!(*one, session("client-7", 3600));
    assert_eq!(*loaded.state.retained[0], retained);
}

#[test]
fn an_unreachable_server_is_an_error_naming_it() {
    let port = free_port();
    let err = RedisStore::open(&format!("redis://127.0.0.1:{port}/0"), "petrel").unwrap_err();
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[test]
fn a_session_saved_change_by_change_comes_back_exactly_from_redis() {
    let dir = Scratch::new("redis-churn");
    let redis = RedisServer::start(&dir.0, free_port());
    let url = redis.url();
    common::churn(|| Box::new(RedisStore::open(&url, "churn").unwrap()));
}
