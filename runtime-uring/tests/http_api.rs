//! The HTTP API against the real `petrel` binary: every endpoint driven by curl, with
//! mosquitto_sub and mosquitto_pub as the MQTT clients, and schemathesis (PyPI) run
//! against the live server with the OpenAPI document it serves.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{publish, Broker, Sub};
use serde_json::Value;

const TOKEN: &str = "s3cret-token";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("petrel-http-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts petrel with `[http]` on a free loopback port and these extra lines in the table;
/// returns the broker and the API's base URL.
fn start(dir: &Path, http: &str) -> (Broker, String) {
    let config = dir.join("petrel.toml");
    std::fs::write(&config, format!("[http]\nbind = \"127.0.0.1:0\"\n{http}\n")).unwrap();
    let broker = Broker::start_with(&["--workers", "2", "--config", config.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = broker.log();
        if let Some(at) = log.find("http api listening on ") {
            let addr = log[at + "http api listening on ".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            return (broker, format!("http://{addr}"));
        }
        assert!(Instant::now() < deadline, "no http address in {log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `curl` with the token: returns the status and the body.
fn curl(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    curl_as(
        &["-H", &format!("Authorization: Bearer {TOKEN}")],
        method,
        url,
        body,
    )
}

fn curl_as(auth: &[&str], method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let mut command = Command::new("curl");
    command
        .args(["-s", "-X", method, "-w", "\n%{http_code}"])
        .args(auth);
    if let Some(body) = body {
        command.args(["-H", "Content-Type: application/json", "--data", body]);
    }
    let output = command.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (status.trim().parse().expect("status"), body.to_string())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Waits until `check` holds for the JSON of `GET url`.
fn eventually(url: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = curl("GET", url, None);
        if status == 200 && check(&json(&body)) {
            return json(&body);
        }
        assert!(Instant::now() < deadline, "{url}: {status} {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_endpoint_by_curl() {
    let dir = temp_dir("curl");
    let (broker, api) = start(&dir, &format!("token = \"{TOKEN}\""));

    // Health and the document are public; everything else needs the token.
    let (status, body) = curl_as(&[], "GET", &format!("{api}/health"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["status"], "ok");
    let (status, body) = curl_as(&[], "GET", &format!("{api}/api/v1/openapi.json"), None);
    assert_eq!(status, 200);
    assert_eq!(json(&body)["openapi"], "3.0.3");
    for path in ["/metrics", "/api/v1/clients", "/api/v1/retained"] {
        let (status, _) = curl_as(&[], "GET", &format!("{api}{path}"), None);
        assert_eq!(status, 401, "{path} without a token");
        let (status, _) = curl_as(
            &["-H", "Authorization: Bearer wrong"],
            "GET",
            &format!("{api}{path}"),
            None,
        );
        assert_eq!(status, 401, "{path} with a wrong token");
    }

    // A live subscriber, and a persistent session that is away.
    let live = Sub::start(
        &broker,
        &["-i", "live", "-t", "http/#", "-q", "2", "-C", "2"],
    );
    Sub::start(
        &broker,
        &[
            "-i",
            "away",
            "-c",
            "-q",
            "1",
            "-t",
            "http/queued",
            "-V",
            "5",
            "-x",
            "300",
        ],
    )
    .kill();
    eventually(&format!("{api}/api/v1/sessions?connected=false"), |v| {
        v["total"] == 1
    });

    // Publish at QoS 0, 1 and 2.
    let (status, body) = curl(
        "POST",
        &format!("{api}/api/v1/publish"),
        Some(r#"{"topic":"http/a","payload":"zero"}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(&body),
        serde_json::json!({"delivered": 1, "queued": 0})
    );
    let (status, body) = curl(
        "POST",
        &format!("{api}/api/v1/publish"),
        Some(r#"{"topic":"http/queued","payload":"b25l","base64":true,"qos":1}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(&body),
        serde_json::json!({"delivered": 1, "queued": 1})
    );
    // live took its -C 2 and leaves; the next publish must find it gone, not leaving.
    assert_eq!(
        live.lines(),
        ["http/a zero", "http/queued one"],
        "what the live subscriber received"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl("GET", &format!("{api}/api/v1/clients/live"), None).0 != 404 {
        assert!(Instant::now() < deadline, "live is still connected");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = curl(
        "POST",
        &format!("{api}/api/v1/publish"),
        Some(
            r#"{"topic":"http/retained","payload":"two","qos":2,"retain":true,
                "properties":{"content_type":"text/plain","user_properties":[{"name":"k","value":"v"}]}}"#,
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["delivered"], 0, "live has gone");
    for bad in [
        r#"{"topic":"http/+","payload":"x"}"#,
        r#"{"topic":"t","qos":3}"#,
        r#"{"topic":"t","payload":"%%","base64":true}"#,
        r#"{"payload":"no topic"}"#,
        "not json",
    ] {
        let (status, body) = curl("POST", &format!("{api}/api/v1/publish"), Some(bad));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(json(&body)["error"].is_string());
    }

    // Sessions and clients, with filters and paging.
    let holder = Sub::start(
        &broker,
        &["-i", "holder", "-t", "hold/+", "-q", "1", "-V", "5"],
    );
    let page = eventually(&format!("{api}/api/v1/clients"), |v| v["total"] == 1);
    assert_eq!(page["data"][0]["client_id"], "holder");
    assert_eq!(page["data"][0]["protocol"], "5.0");
    let all = eventually(&format!("{api}/api/v1/sessions?limit=1&page=2"), |v| {
        v["total"] == 2
    });
    assert_eq!(
        all["data"][0]["client_id"], "holder",
        "sorted: away, holder"
    );
    assert_eq!(all["data"].as_array().unwrap().len(), 1);
    let away = eventually(&format!("{api}/api/v1/sessions/away"), |_| true);
    assert_eq!(away["connected"], false);
    assert_eq!(away["queued"], 1);
    let (status, _) = curl("GET", &format!("{api}/api/v1/clients/away"), None);
    assert_eq!(status, 404, "away is not connected");
    let (status, _) = curl("GET", &format!("{api}/api/v1/sessions?page=0"), None);
    assert_eq!(status, 400);

    // Subscriptions: list, subscribe on behalf, unsubscribe.
    let subs = eventually(
        &format!("{api}/api/v1/subscriptions?client_id=holder"),
        |v| v["total"] == 1,
    );
    assert_eq!(subs["data"][0]["filter"], "hold/+");
    assert_eq!(subs["data"][0]["qos"], 1);
    let (status, body) = curl(
        "POST",
        &format!("{api}/api/v1/subscribe"),
        Some(r#"{"client_id":"holder","filter":"extra/#","qos":2}"#),
    );
    assert_eq!(status, 200, "{body}");
    eventually(&format!("{api}/api/v1/subscriptions?qos=2"), |v| {
        v["total"] == 1
    });
    let (status, body) = curl(
        "POST",
        &format!("{api}/api/v1/publish"),
        Some(r#"{"topic":"extra/x","payload":"on behalf"}"#),
    );
    assert_eq!((status, json(&body)["delivered"].clone()), (200, 1.into()));
    let (status, _) = curl(
        "POST",
        &format!("{api}/api/v1/unsubscribe"),
        Some(r#"{"client_id":"holder","filter":"extra/#"}"#),
    );
    assert_eq!(status, 200);
    let (status, _) = curl(
        "POST",
        &format!("{api}/api/v1/unsubscribe"),
        Some(r#"{"client_id":"holder","filter":"extra/#"}"#),
    );
    assert_eq!(status, 404);
    let (status, _) = curl(
        "POST",
        &format!("{api}/api/v1/subscribe"),
        Some(r#"{"client_id":"nobody","filter":"x"}"#),
    );
    assert_eq!(status, 404);

    // Kick: DISCONNECT 0x98, the session stays.
    let (status, body) = curl("DELETE", &format!("{api}/api/v1/clients/holder"), None);
    assert_eq!(status, 200, "{body}");
    let got = holder.lines();
    assert_eq!(
        got,
        ["extra/x on behalf"],
        "holder got the message, then was closed"
    );
    let (status, _) = curl("DELETE", &format!("{api}/api/v1/clients/holder"), None);
    assert_eq!(status, 404);

    // Retained: list, filter, delete (a new subscriber then gets nothing).
    let retained = eventually(&format!("{api}/api/v1/retained?topic_prefix=http/"), |v| {
        v["total"] == 1
    });
    assert_eq!(retained["data"][0]["topic"], "http/retained");
    assert_eq!(retained["data"][0]["payload"], "dHdv");
    publish(&broker, &["-t", "other/r", "-m", "x", "-r"]);
    eventually(&format!("{api}/api/v1/retained?topic_prefix=other/"), |v| {
        v["total"] == 1
    });
    let (status, _) = curl(
        "DELETE",
        &format!("{api}/api/v1/retained?topic=http%2Fretained"),
        None,
    );
    assert_eq!(status, 200);
    let (status, _) = curl(
        "DELETE",
        &format!("{api}/api/v1/retained?topic=http%2Fretained"),
        None,
    );
    assert_eq!(status, 404);
    let lines = Sub::start(&broker, &["-t", "http/retained", "-W", "1"]).lines();
    assert!(lines.is_empty(), "deleted on every shard: {lines:?}");

    // Metrics.
    let (status, text) = curl("GET", &format!("{api}/metrics"), None);
    assert_eq!(status, 200);
    for line in [
        "petrel_messages_received_total{qos=\"0\"} ",
        "petrel_messages_received_total{qos=\"1\"} 1",
        "petrel_messages_received_total{qos=\"2\"} 1",
        "petrel_messages_dropped_total{reason=\"queue_full\"} 0",
        "petrel_retained_messages ",
        "petrel_queued_messages 1",
        "petrel_sessions 1",
        "# TYPE petrel_bytes_received_total counter",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
    let (status, _) = curl("GET", &format!("{api}/nothing"), None);
    assert_eq!(status, 404);
    let (status, _) = curl("PUT", &format!("{api}/api/v1/publish"), None);
    assert_eq!(status, 405);
}

#[test]
fn basic_auth_from_a_password_file() {
    let dir = temp_dir("basic");
    let passwords = dir.join("passwords");
    let status = Command::new(env!("CARGO_BIN_EXE_petrel"))
        .args(["passwd", "-c", "-b", "-i", "1000"])
        .args([passwords.to_str().unwrap(), "ops", "opensesame"])
        .status()
        .unwrap();
    assert!(status.success());
    let (_broker, api) = start(
        &dir,
        &format!("password_file = {:?}", passwords.to_str().unwrap()),
    );
    let (status, _) = curl_as(
        &["-u", "ops:opensesame"],
        "GET",
        &format!("{api}/metrics"),
        None,
    );
    assert_eq!(status, 200);
    let (status, _) = curl_as(&["-u", "ops:wrong"], "GET", &format!("{api}/metrics"), None);
    assert_eq!(status, 401);
}

#[test]
fn schemathesis_finds_nothing_against_the_live_server() {
    let dir = temp_dir("schemathesis");
    let (broker, api) = start(&dir, &format!("token = \"{TOKEN}\""));
    // Something to list, look up and delete.
    let _sub = Sub::start(&broker, &["-i", "watcher", "-t", "s/#"]);
    publish(&broker, &["-t", "s/r", "-m", "x", "-r"]);
    let output = Command::new("schemathesis")
        .args(["run", &format!("{api}/api/v1/openapi.json")])
        .args(["--url", &api])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "40", "--seed", "1"])
        .env("SCHEMATHESIS_HOOKS", "")
        // It leaves a cache directory where it runs.
        .current_dir(&dir)
        .output()
        .expect("schemathesis (pip install schemathesis)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(output.status.success(), "schemathesis failed:\n{report}");
    assert!(
        !report.contains("No operations"),
        "schemathesis tested nothing:\n{report}"
    );
    assert!(broker.log().contains("http api listening"));
}
