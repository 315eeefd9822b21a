//! The endpoints: routing, request parsing, and the JSON the answers are made of.

use std::io::{Cursor, Read};

use base64::Engine;
use petrel_codec::topic::{validate_topic_filter, validate_topic_name};
use petrel_codec::{ProtocolVersion, QoS};
use petrel_state::broker::{owner_shard, ClientSummary, PublishReport, SubscriptionSummary};
use petrel_state::message::Message;
use petrel_state::Duration;
use serde::Deserialize;
use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response};

use super::fanout::ask_all;
use super::metrics;
use crate::shared::Shared;

/// A response with a body in memory.
pub(super) type Reply = Response<Cursor<Vec<u8>>>;

/// The OpenAPI 3 document of this API.
pub(super) const OPENAPI: &str = include_str!("openapi.json");

/// The largest request body read, in bytes (a publish carries its payload).
const MAX_BODY: u64 = 4 * 1024 * 1024;
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// Serves one request. `authorized(public)` says whether the caller may go on; `public`
/// endpoints (`/health`, the OpenAPI document) ask with `true`.
pub(super) fn handle(
    request: &mut Request,
    shared: &Shared,
    authorized: impl Fn(bool) -> bool,
) -> Reply {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let Some(path) = percent_decode(path) else {
        return error(400, "the path is not valid percent-encoded UTF-8");
    };
    let Some(query) = Query::parse(query) else {
        return error(400, "the query is not valid percent-encoded UTF-8");
    };
    let method = request.method().clone();
    let public = matches!(path.as_str(), "/health" | "/api/v1/openapi.json");
    if !authorized(public) {
        let mut reply = error(401, "authentication required");
        reply.add_header(header(
            "WWW-Authenticate",
            "Basic realm=\"petrel\", Bearer realm=\"petrel\"",
        ));
        return reply;
    }
    let result = match (&method, path.as_str()) {
        (Method::Get, "/health") => health(shared),
        (Method::Get, "/metrics") => return metrics_reply(shared),
        (Method::Get, "/api/v1/openapi.json") => {
            return Response::from_data(OPENAPI.as_bytes().to_vec())
                .with_header(header("Content-Type", "application/json"))
        }
        (Method::Post, "/api/v1/publish") => read_json(request).and_then(|b| publish(shared, b)),
        (Method::Get, "/api/v1/clients") => sessions(shared, &query, true),
        (Method::Get, "/api/v1/sessions") => sessions(shared, &query, false),
        (Method::Get, "/api/v1/subscriptions") => subscriptions(shared, &query),
        (Method::Post, "/api/v1/subscribe") => {
            read_json(request).and_then(|b| subscribe(shared, b))
        }
        (Method::Post, "/api/v1/unsubscribe") => {
            read_json(request).and_then(|b| unsubscribe(shared, b))
        }
        (Method::Get, "/api/v1/retained") => retained(shared, &query),
        (Method::Delete, "/api/v1/retained") => delete_retained(shared, &query),
        (Method::Get, p) if p.starts_with("/api/v1/clients/") => {
            session(shared, &p["/api/v1/clients/".len()..], true)
        }
        (Method::Get, p) if p.starts_with("/api/v1/sessions/") => {
            session(shared, &p["/api/v1/sessions/".len()..], false)
        }
        (Method::Delete, p) if p.starts_with("/api/v1/clients/") => {
            kick(shared, &p["/api/v1/clients/".len()..])
        }
        (_, p) if KNOWN.contains(&p) || p.starts_with("/api/v1/clients/") => {
            Err((405, format!("{method} is not allowed on {p}")))
        }
        (_, p) => Err((404, format!("no endpoint {p}"))),
    };
    match result {
        Ok((status, body)) => json_reply(status, &body),
        Err((status, message)) => error(status, &message),
    }
}

const KNOWN: &[&str] = &[
    "/health",
    "/metrics",
    "/api/v1/openapi.json",
    "/api/v1/publish",
    "/api/v1/clients",
    "/api/v1/sessions",
    "/api/v1/subscriptions",
    "/api/v1/subscribe",
    "/api/v1/unsubscribe",
    "/api/v1/retained",
];

type Outcome = Result<(u16, Value), (u16, String)>;

fn header(name: &str, value: &str) -> Header {
    // Both are ASCII constants of this module or digits; a bad one is a bug here.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header")
}

fn json_reply(status: u16, body: &Value) -> Reply {
    Response::from_data(body.to_string().into_bytes())
        .with_status_code(status)
        .with_header(header("Content-Type", "application/json"))
}

fn error(status: u16, message: &str) -> Reply {
    json_reply(status, &json!({ "error": message }))
}

fn unavailable() -> (u16, String) {
    (503, String::from("a worker did not answer in time"))
}

fn read_json(request: &mut Request) -> Result<Value, (u16, String)> {
    let mut body = Vec::new();
    request
        .as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body)
        .map_err(|e| (400, format!("reading the body: {e}")))?;
    if body.len() as u64 > MAX_BODY {
        return Err((413, format!("the body is larger than {MAX_BODY} bytes")));
    }
    serde_json::from_slice(&body).map_err(|e| (400, format!("the body is not JSON: {e}")))
}

fn from_body<T: for<'de> Deserialize<'de>>(body: Value) -> Result<T, (u16, String)> {
    serde_json::from_value(body).map_err(|e| (400, format!("invalid body: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Query strings

/// A decoded query string.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(text: &str) -> Option<Query> {
        let mut pairs = Vec::new();
        for part in text.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            pairs.push((
                percent_decode(&key.replace('+', " "))?,
                percent_decode(&value.replace('+', " "))?,
            ));
        }
        Some(Query(pairs))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn number(
        &self,
        key: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, (u16, String)> {
        match self.get(key) {
            None => Ok(default),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err((400, format!("{key}: a number from {min} to {max}"))),
            },
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, (u16, String)> {
        match self.get(key) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err((400, format!("{key}: true or false"))),
        }
    }

    /// `page` (from 1) and `limit`.
    fn paging(&self) -> Result<(usize, usize), (u16, String)> {
        Ok((
            self.number("page", 1, 1, 1_000_000)?,
            self.number("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?,
        ))
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn page<T>(items: Vec<T>, page: usize, limit: usize, to_json: impl Fn(&T) -> Value) -> Value {
    let total = items.len();
    let data: Vec<Value> = items
        .iter()
        .skip((page - 1).saturating_mul(limit))
        .take(limit)
        .map(to_json)
        .collect();
    json!({ "data": data, "page": page, "limit": limit, "total": total })
}

fn qos_of(n: u64) -> Result<QoS, (u16, String)> {
    u8::try_from(n)
        .ok()
        .and_then(QoS::from_bits)
        .ok_or_else(|| (400, String::from("qos: 0, 1 or 2")))
}

// ---------------------------------------------------------------------------------------------
// Endpoints

fn health(shared: &Shared) -> Outcome {
    ask_all(shared, |_, _, _| ()).ok_or_else(unavailable)?;
    Ok((
        200,
        json!({ "status": "ok", "workers": shared.workers(), "uptime_seconds": shared.uptime_secs() }),
    ))
}

fn metrics_reply(shared: &Shared) -> Reply {
    match metrics::render(shared) {
        Some(text) => Response::from_data(text.into_bytes()).with_header(header(
            "Content-Type",
            "text/plain; version=0.0.4; charset=utf-8",
        )),
        None => {
            let (status, message) = unavailable();
            error(status, &message)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    topic: String,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    base64: bool,
    #[serde(default)]
    qos: u64,
    #[serde(default)]
    retain: bool,
    #[serde(default)]
    properties: PublishProperties,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PublishProperties {
    payload_format_indicator: Option<bool>,
    message_expiry_interval: Option<u32>,
    content_type: Option<String>,
    response_topic: Option<String>,
    /// Base64.
    correlation_data: Option<String>,
    #[serde(default)]
    user_properties: Vec<UserProperty>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserProperty {
    name: String,
    value: String,
}

fn publish(shared: &Shared, body: Value) -> Outcome {
    let body: PublishBody = from_body(body)?;
    validate_topic_name(&body.topic).map_err(|_| {
        (
            400,
            String::from("topic: a topic name (not empty, no wildcards, no NUL)"),
        )
    })?;
    let qos = qos_of(body.qos)?;
    if qos > shared.server_config.maximum_qos {
        return Err((400, String::from("qos: above the broker's maximum_qos")));
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let payload = if body.base64 {
        engine
            .decode(body.payload.as_bytes())
            .map_err(|e| (400, format!("payload: not base64: {e}")))?
    } else {
        body.payload.into_bytes()
    };
    let properties = body.properties;
    let mut message = Message::new(&body.topic, payload);
    message.qos = qos;
    message.retain = body.retain;
    if let Some(topic) = &properties.response_topic {
        validate_topic_name(topic)
            .map_err(|_| (400, String::from("properties.response_topic: a topic name")))?;
    }
    let extra = &mut message.properties;
    extra.payload_format_indicator = properties.payload_format_indicator;
    extra.content_type = properties.content_type;
    extra.response_topic = properties.response_topic;
    extra.correlation_data = match properties.correlation_data {
        Some(data) => Some(
            engine
                .decode(data.as_bytes())
                .map_err(|e| (400, format!("properties.correlation_data: not base64: {e}")))?
                .into(),
        ),
        None => None,
    };
    extra.user_properties = properties
        .user_properties
        .into_iter()
        .map(|p| (p.name, p.value))
        .collect();
    let expiry = properties.message_expiry_interval;
    let reports = ask_all(shared, move |broker, now, index| {
        let mut message = message.clone();
        if let Some(seconds) = expiry {
            message.properties.expires_at = Some(now + Duration::from_secs(u64::from(seconds)));
        }
        broker.publish_here(now, message, index == 0)
    })
    .ok_or_else(unavailable)?;
    let total = reports
        .iter()
        .fold(PublishReport::default(), |a, r| PublishReport {
            delivered: a.delivered + r.delivered,
            queued: a.queued + r.queued,
        });
    Ok((
        200,
        json!({ "delivered": total.delivered, "queued": total.queued }),
    ))
}

fn client_json(client: &ClientSummary) -> Value {
    json!({
        "client_id": client.client_id,
        "connected": client.connected,
        "username": client.username,
        "remote": client.remote,
        "protocol": client.protocol.map(|p| match p {
            ProtocolVersion::V311 => "3.1.1",
            ProtocolVersion::V5 => "5.0",
        }),
        "expiry_interval": client.expiry_interval,
        "subscriptions": client.subscriptions,
        "inflight": client.inflight,
        "queued": client.queued,
        "queued_bytes": client.queued_bytes,
    })
}

/// `/clients` (connected only) and `/sessions` (all, or `connected=true|false`); filters
/// `client_id` (a substring) and `username` (exact).
fn sessions(shared: &Shared, query: &Query, connected_only: bool) -> Outcome {
    let (page_number, limit) = query.paging()?;
    let connected = if connected_only {
        Some(true)
    } else {
        query.boolean("connected")?
    };
    let id_part = query.get("client_id").map(str::to_string);
    let username = query.get("username").map(str::to_string);
    let mut all: Vec<ClientSummary> = ask_all(shared, |broker, _, _| broker.clients())
        .ok_or_else(unavailable)?
        .into_iter()
        .flatten()
        .filter(|c| connected.is_none_or(|want| c.connected == want))
        .filter(|c| {
            id_part
                .as_ref()
                .is_none_or(|p| c.client_id.contains(p.as_str()))
        })
        .filter(|c| {
            username
                .as_ref()
                .is_none_or(|u| c.username.as_deref() == Some(u.as_str()))
        })
        .collect();
    all.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    Ok((200, page(all, page_number, limit, client_json)))
}

fn find_session(shared: &Shared, client_id: &str) -> Result<Option<ClientSummary>, (u16, String)> {
    let id = client_id.to_string();
    let found = ask_all(shared, move |broker, _, _| broker.client(&id)).ok_or_else(unavailable)?;
    Ok(found.into_iter().flatten().next())
}

fn session(shared: &Shared, client_id: &str, connected_only: bool) -> Outcome {
    match find_session(shared, client_id)? {
        Some(client) if client.connected || !connected_only => Ok((200, client_json(&client))),
        _ => Err((404, format!("no client {client_id:?}"))),
    }
}

fn kick(shared: &Shared, client_id: &str) -> Outcome {
    let id = client_id.to_string();
    let kicked = ask_all(shared, move |broker, now, _| {
        broker.disconnect_client(now, &id)
    })
    .ok_or_else(unavailable)?;
    if kicked.contains(&true) {
        Ok((200, json!({ "disconnected": client_id })))
    } else {
        Err((404, format!("no connected client {client_id:?}")))
    }
}

fn subscription_json(subscription: &SubscriptionSummary) -> Value {
    json!({
        "client_id": subscription.client_id,
        "filter": subscription.filter,
        "qos": subscription.qos as u8,
    })
}

/// Filters: `client_id` and `filter` (exact), `qos`.
fn subscriptions(shared: &Shared, query: &Query) -> Outcome {
    let (page_number, limit) = query.paging()?;
    let qos = match query.get("qos") {
        Some(_) => Some(qos_of(query.number("qos", 0, 0, 2)? as u64)?),
        None => None,
    };
    let client_id = query.get("client_id").map(str::to_string);
    let filter = query.get("filter").map(str::to_string);
    let mut all: Vec<SubscriptionSummary> =
        ask_all(shared, |broker, _, _| broker.subscription_list())
            .ok_or_else(unavailable)?
            .into_iter()
            .flatten()
            .filter(|s| client_id.as_ref().is_none_or(|c| &s.client_id == c))
            .filter(|s| filter.as_ref().is_none_or(|f| &s.filter == f))
            .filter(|s| qos.is_none_or(|q| s.qos == q))
            .collect();
    all.sort_by(|a, b| (&a.client_id, &a.filter).cmp(&(&b.client_id, &b.filter)));
    Ok((200, page(all, page_number, limit, subscription_json)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeBody {
    client_id: String,
    filter: String,
    #[serde(default)]
    qos: u64,
}

fn subscribe(shared: &Shared, body: Value) -> Outcome {
    let body: SubscribeBody = from_body(body)?;
    let qos = qos_of(body.qos)?;
    validate_topic_filter(&body.filter)
        .map_err(|_| (400, String::from("filter: not a valid topic filter")))?;
    let (client_id, filter) = (body.client_id.clone(), body.filter.clone());
    let done = ask_all(shared, move |broker, now, _| {
        broker.subscribe_for(now, &client_id, &filter, qos)
    })
    .ok_or_else(unavailable)?;
    if done.contains(&true) {
        Ok((
            200,
            json!({ "client_id": body.client_id, "filter": body.filter, "qos": qos as u8 }),
        ))
    } else {
        Err((404, format!("no session {:?}", body.client_id)))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeBody {
    client_id: String,
    filter: String,
}

fn unsubscribe(shared: &Shared, body: Value) -> Outcome {
    let body: UnsubscribeBody = from_body(body)?;
    let (client_id, filter) = (body.client_id.clone(), body.filter.clone());
    let done = ask_all(shared, move |broker, now, _| {
        broker.unsubscribe_for(now, &client_id, &filter)
    })
    .ok_or_else(unavailable)?;
    if done.contains(&true) {
        Ok((
            200,
            json!({ "client_id": body.client_id, "filter": body.filter }),
        ))
    } else {
        Err((
            404,
            format!("{:?} has no subscription {:?}", body.client_id, body.filter),
        ))
    }
}

/// Filter: `topic_prefix`. Every shard holds every retained message: worker 0 answers.
fn retained(shared: &Shared, query: &Query) -> Outcome {
    let (page_number, limit) = query.paging()?;
    let prefix = query.get("topic_prefix").unwrap_or("").to_string();
    let mut all = ask_all(shared, move |broker, _, index| {
        if index == 0 {
            broker.retained_messages()
        } else {
            Vec::new()
        }
    })
    .ok_or_else(unavailable)?
    .into_iter()
    .flatten()
    .filter(|m| m.topic.starts_with(prefix.as_str()))
    .collect::<Vec<_>>();
    all.sort_by(|a, b| a.topic.cmp(&b.topic));
    let engine = base64::engine::general_purpose::STANDARD;
    Ok((
        200,
        page(all, page_number, limit, |m| {
            json!({
                "topic": &*m.topic,
                "payload": engine.encode(&m.payload),
                "qos": m.qos as u8,
            })
        }),
    ))
}

fn delete_retained(shared: &Shared, query: &Query) -> Outcome {
    let Some(topic) = query.get("topic").map(str::to_string) else {
        return Err((400, String::from("topic: required")));
    };
    let name = topic.clone();
    // The topic's owner deletes it and tells the others.
    let owner = usize::from(owner_shard(&topic, shared.workers() as u16));
    let deleted = ask_all(shared, move |broker, now, index| {
        index == owner && broker.delete_retained(now, &name)
    })
    .ok_or_else(unavailable)?;
    if deleted.contains(&true) {
        Ok((200, json!({ "deleted": topic })))
    } else {
        Err((404, format!("no retained message on {topic:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_and_page() {
        let query = Query::parse("client_id=a%2Fb+c&page=2&limit=1").unwrap();
        assert_eq!(query.get("client_id"), Some("a/b c"));
        assert_eq!(query.paging().unwrap(), (2, 1));
        assert!(Query::parse("x=%zz").is_none());
        assert!(Query::parse("limit=0").unwrap().paging().is_err());
        let paged = page(vec![1, 2, 3], 2, 2, |n| json!(n));
        assert_eq!(paged["data"], json!([3]));
        assert_eq!(paged["total"], json!(3));
    }

    #[test]
    fn the_openapi_document_is_json_and_names_every_endpoint() {
        let document: Value = serde_json::from_str(OPENAPI).unwrap();
        for path in KNOWN {
            assert!(document["paths"].get(path).is_some(), "{path} undocumented");
        }
    }
}
