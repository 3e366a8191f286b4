//! The HTTP side: authentication, fault injection, routing, discovery,
//! the verbs (get, list, watch, create, replace, patch, delete) and their
//! query parameters, and the `Status` answers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::RequestRecord;
use super::kubelet;
use super::registry::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::state::{DeleteOptions, Event, EventKind, PatchKind, Shared, Sub, str_at};
use super::status::{ApiError, FieldError, status_body};

/// Largest request body the API server accepts (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Default watch duration when the client sets none (the API server
/// picks 30 to 60 minutes).
const DEFAULT_WATCH_TIMEOUT: u64 = 1800;

pub(crate) type Answer = Response<Body>;

pub(crate) fn json_answer(code: u16, body: &Value) -> Answer {
    json_answer_as(code, body, "application/json")
}

fn json_answer_as(code: u16, body: &Value, content_type: &str) -> Answer {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = content_type.parse() {
        response.headers_mut().insert("content-type", v);
    }
    response
}

pub(crate) fn error_answer(error: &ApiError) -> Answer {
    json_answer(error.code, &error.body)
}

/// A parsed query string.
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Self {
        Self(
            form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(crate) fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| matches!(v, "true" | "1" | "True" | "TRUE" | "t" | "T"))
    }

    fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }
}

/// Where a request goes.
#[derive(Debug)]
enum Target {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    GroupVersion(String, String),
    Resource(ResourcePath),
    Unknown,
}

#[derive(Debug, Clone)]
pub(crate) struct ResourcePath {
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) namespace: Option<String>,
    pub(crate) plural: String,
    pub(crate) name: Option<String>,
    pub(crate) sub: Option<String>,
}

fn parse_path(path: &str) -> Target {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let resource = |group: &str, version: &str, rest: &[&str]| -> Target {
        let owned = |s: Option<&&str>| s.map(|s| (*s).to_owned());
        let namespaced = rest.len() >= 3
            && rest[0] == "namespaces"
            && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
        let (namespace, rest) = if namespaced {
            (Some(rest[1].to_owned()), &rest[2..])
        } else {
            (None, rest)
        };
        if rest.is_empty() || rest.len() > 3 {
            return Target::Unknown;
        }
        Target::Resource(ResourcePath {
            group: group.to_owned(),
            version: version.to_owned(),
            namespace,
            plural: rest[0].to_owned(),
            name: owned(rest.get(1)),
            sub: owned(rest.get(2)),
        })
    };
    match segments.as_slice() {
        ["version"] => Target::Version,
        ["healthz" | "livez" | "readyz"] => Target::Health,
        ["api"] => Target::CoreVersions,
        ["api", version] => Target::GroupVersion(String::new(), (*version).to_owned()),
        ["api", version, rest @ ..] => resource("", version, rest),
        ["apis"] => Target::Groups,
        ["apis", group] => Target::Group((*group).to_owned()),
        ["apis", group, version] => {
            Target::GroupVersion((*group).to_owned(), (*version).to_owned())
        }
        ["apis", group, version, rest @ ..] => resource(group, version, rest),
        _ => Target::Unknown,
    }
}

/// Everything about one request a handler needs.
pub(crate) struct Call {
    pub(crate) method: Method,
    pub(crate) query: Query,
    pub(crate) headers: HeaderMap,
    pub(crate) manager: String,
    pub(crate) partial_metadata: bool,
}

impl Call {
    fn content_type(&self) -> String {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default()
    }

    fn dry_run(&self) -> bool {
        self.query.get("dryRun").is_some_and(|v| v == "All")
    }
}

/// The axum handler: every request.
pub(crate) async fn handle(
    AxumState(shared): AxumState<Arc<Shared>>,
    request: Request<Body>,
) -> Answer {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let raw_query = request.uri().query().unwrap_or_default().to_owned();
    let query = Query::parse(&raw_query);
    let headers = request.headers().clone();
    let record = RequestRecord {
        method: method.to_string(),
        path: path.clone(),
        query: raw_query,
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        field_manager: query.get("fieldManager").map(str::to_owned),
        is_watch: query.flag("watch"),
        status: 0,
    };
    let answer = route(&shared, request, method, &path, query, headers).await;
    let mut record = record;
    record.status = answer.status().as_u16();
    shared.lock().requests.push(record);
    answer
}

async fn route(
    shared: &Arc<Shared>,
    request: Request<Body>,
    method: Method,
    path: &str,
    query: Query,
    headers: HeaderMap,
) -> Answer {
    if shared.lock().down {
        return error_answer(&ApiError::service_unavailable());
    }
    let target = parse_path(path);
    if matches!(target, Target::Health) {
        let mut response = Response::new(Body::from("ok"));
        response.headers_mut().insert(
            "content-type",
            axum::http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return response;
    }
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .is_some_and(|t| t.trim() == shared.token);
    if !authorized {
        return error_answer(&ApiError::unauthorized());
    }
    {
        let mut state = shared.lock();
        let method_name = method.as_str();
        if let Some(i) = state.faults.iter().position(|f| {
            (f.method.is_empty() || f.method == "*" || f.method.eq_ignore_ascii_case(method_name))
                && path.contains(&f.path_contains)
        }) {
            let status = state.faults[i].status;
            state.faults[i].remaining -= 1;
            if state.faults[i].remaining == 0 {
                state.faults.remove(i);
            }
            let mut answer = error_answer(&ApiError::injected(status));
            if status == 429 {
                // As API priority and fairness rejects.
                answer
                    .headers_mut()
                    .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            }
            return answer;
        }
    }
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let aggregated = accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=APIGroupDiscoveryList"));
    let metrics = shared.lock().metrics;
    let discovery = |doc: Option<Value>| match doc {
        Some(doc) => json_answer(200, &doc),
        None => error_answer(&ApiError::unknown_path()),
    };
    if !matches!(target, Target::Resource(_)) && method != Method::GET {
        return error_answer(&ApiError::method_not_allowed());
    }
    match target {
        Target::Version => json_answer(200, &version()),
        Target::Health => error_answer(&ApiError::unknown_path()),
        Target::CoreVersions => {
            let state = shared.lock();
            if aggregated {
                json_answer_as(200, &state.registry.aggregated(true, metrics), AGGREGATED)
            } else {
                let server = headers
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("127.0.0.1")
                    .to_owned();
                json_answer(200, &state.registry.core_versions(&server))
            }
        }
        Target::Groups => {
            let state = shared.lock();
            if aggregated {
                json_answer_as(200, &state.registry.aggregated(false, metrics), AGGREGATED)
            } else {
                json_answer(200, &state.registry.group_list(metrics))
            }
        }
        Target::Group(group) => discovery(shared.lock().registry.group(&group, metrics)),
        Target::GroupVersion(group, version) => {
            if group.is_empty() && version != "v1" {
                return error_answer(&ApiError::unknown_path());
            }
            discovery(
                shared
                    .lock()
                    .registry
                    .resource_list(&group, &version, metrics),
            )
        }
        Target::Unknown => error_answer(&ApiError::unknown_path()),
        Target::Resource(rp) => {
            let manager = query
                .non_empty("fieldManager")
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    let agent = headers
                        .get("user-agent")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    let prefix = agent.split('/').next().unwrap_or_default();
                    if prefix.is_empty() {
                        "unknown".to_owned()
                    } else {
                        prefix.to_owned()
                    }
                });
            let call = Call {
                method,
                query,
                headers,
                manager,
                partial_metadata: accept.contains("as=PartialObjectMetadata"),
            };
            resource(shared, request, &call, &rp).await
        }
    }
}

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0",
        "gitCommit": "60a317eadfcb839692a5551a3d0c1fd5ff2f6a2c",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

async fn read_body(request: Request<Body>) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|_| ApiError::too_large())
}

fn parse_json(body: &[u8], content_type: &str) -> Result<Value, ApiError> {
    if content_type.contains("yaml") {
        return super::yaml::parse(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

async fn resource(
    shared: &Arc<Shared>,
    request: Request<Body>,
    call: &Call,
    rp: &ResourcePath,
) -> Answer {
    if rp.group == "metrics.k8s.io" {
        return metrics(shared, call, rp);
    }
    let rt = shared
        .lock()
        .registry
        .get(&rp.group, &rp.version, &rp.plural);
    let Some(rt) = rt else {
        return error_answer(&ApiError::unknown_path());
    };
    if (rp.namespace.is_some() && !rt.namespaced)
        || (rp.name.is_some() && rt.namespaced && rp.namespace.is_none())
    {
        return error_answer(&ApiError::unknown_path());
    }
    if let Some(name) = &rp.name
        && let Err(why) = path_name(name)
    {
        return error_answer(&ApiError::bad_request(why));
    }
    let result = match (&rp.name, rp.sub.as_deref()) {
        (None, None) => match call.method {
            Method::GET if call.query.flag("watch") => return watch(shared, call, &rt, rp, None),
            Method::GET => list(shared, call, &rt, rp),
            Method::POST => create(shared, request, call, &rt, rp).await,
            Method::DELETE if rt.namespaced && rp.namespace.is_none() => {
                Err(ApiError::method_not_allowed())
            }
            Method::DELETE => delete_collection(shared, request, call, &rt, rp).await,
            _ => Err(ApiError::method_not_allowed()),
        },
        (Some(name), None) => match call.method {
            Method::GET if call.query.flag("watch") => {
                return watch(shared, call, &rt, rp, Some(name));
            }
            Method::GET => get(shared, call, &rt, rp, name),
            Method::PUT => replace(shared, request, call, &rt, rp, name, Sub::Main).await,
            Method::PATCH => patch(shared, request, call, &rt, rp, name, Sub::Main).await,
            Method::DELETE => delete(shared, request, call, &rt, rp, name).await,
            _ => Err(ApiError::method_not_allowed()),
        },
        (Some(name), Some(sub)) => {
            let sub_kind = match sub {
                "status" if rt.status => Some(Sub::Status),
                "scale" if rt.scale => Some(Sub::Scale),
                _ => None,
            };
            match (sub_kind, &call.method) {
                (Some(Sub::Scale), &Method::GET) => get_scale(shared, &rt, rp, name),
                (Some(_), &Method::GET) => get(shared, call, &rt, rp, name),
                (Some(s), &Method::PUT) => replace(shared, request, call, &rt, rp, name, s).await,
                (Some(s), &Method::PATCH) => patch(shared, request, call, &rt, rp, name, s).await,
                (Some(_), _) => Err(ApiError::method_not_allowed()),
                (None, method) if rt.is("", "pods") => match (sub, method) {
                    ("log", &Method::GET) => return super::logs::logs(shared, call, rp, name),
                    ("exec", &Method::GET | &Method::POST) => {
                        return super::exec::exec(shared, request, call, rp, name);
                    }
                    ("eviction", &Method::POST) => evict(shared, request, &rt, rp, name).await,
                    ("log" | "exec" | "eviction", _) => Err(ApiError::method_not_allowed()),
                    (
                        "attach"
                        | "portforward"
                        | "proxy"
                        | "binding"
                        | "ephemeralcontainers"
                        | "resize",
                        _,
                    ) => Err(ApiError::bad_request(format!(
                        "the fake Kubernetes API does not serve pods/{sub}"
                    ))),
                    _ => Err(ApiError::unknown_path()),
                },
                (None, _) => Err(ApiError::unknown_path()),
            }
        }
        (None, Some(_)) => Err(ApiError::unknown_path()),
    };
    match result {
        Ok(answer) => answer,
        Err(e) => error_answer(&e),
    }
}

/// Names in paths: what the API server refuses before anything else.
fn path_name(name: &str) -> Result<(), String> {
    if name == "." || name == ".." {
        return Err(format!(
            "invalid resource name \"{name}\": [may not be '{name}']"
        ));
    }
    Ok(())
}

fn partial(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object["metadata"],
    })
}

/// An object as GET returns it (with the served version's apiVersion).
fn served(rt: &ResourceType, object: &Value, call: &Call) -> Value {
    if call.partial_metadata {
        return partial(object);
    }
    let mut object = object.clone();
    if !rt.builtin && object["apiVersion"] != rt.api_version() {
        object["apiVersion"] = json!(rt.api_version());
    }
    object
}

fn namespace_of(rp: &ResourcePath) -> &str {
    rp.namespace.as_deref().unwrap_or_default()
}

fn get(
    shared: &Arc<Shared>,
    call: &Call,
    rt: &ResourceType,
    rp: &ResourcePath,
    name: &str,
) -> Result<Answer, ApiError> {
    let object = shared
        .lock()
        .get(rt, namespace_of(rp), name)
        .ok_or_else(|| ApiError::not_found(rt, name))?;
    Ok(json_answer(200, &served(rt, &object, call)))
}

fn get_scale(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    rp: &ResourcePath,
    name: &str,
) -> Result<Answer, ApiError> {
    let object = shared
        .lock()
        .get(rt, namespace_of(rp), name)
        .ok_or_else(|| ApiError::not_found(rt, name))?;
    Ok(json_answer(200, &super::kinds::scale_of(rt, &object)))
}

fn selectors(call: &Call, rt: &ResourceType) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(call.query.get("labelSelector").unwrap_or_default())?;
    let fields = FieldSelector::parse(
        call.query.get("fieldSelector").unwrap_or_default(),
        &rt.store_key(),
        rt.builtin,
    )?;
    Ok((labels, fields))
}

/// A list continue token: the list's resourceVersion and the last key.
fn encode_continue(rv: u64, namespace: &str, name: &str) -> String {
    let start = if namespace.is_empty() {
        format!("{name}\u{0}")
    } else {
        format!("{namespace}/{name}\u{0}")
    };
    STANDARD.encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string())
}

fn decode_continue(token: &str) -> Result<(u64, (String, String)), ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token}"));
    let bytes = STANDARD.decode(token).map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rv = value["rv"].as_u64().ok_or_else(bad)?;
    let start = value["start"]
        .as_str()
        .ok_or_else(bad)?
        .trim_end_matches('\u{0}');
    let key = match start.split_once('/') {
        Some((ns, name)) => (ns.to_owned(), name.to_owned()),
        None => (String::new(), start.to_owned()),
    };
    Ok((rv, key))
}

fn list(
    shared: &Arc<Shared>,
    call: &Call,
    rt: &ResourceType,
    rp: &ResourcePath,
) -> Result<Answer, ApiError> {
    let (labels, fields) = selectors(call, rt)?;
    let limit: usize = match call.query.non_empty("limit") {
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?
            .max(0)
            .try_into()
            .unwrap_or(usize::MAX),
        None => 0,
    };
    let continued = call
        .query
        .non_empty("continue")
        .map(decode_continue)
        .transpose()?;
    let store = rt.store_key();
    let (objects, list_rv) = {
        let state = shared.lock();
        if let (Some(rv), Some("Exact")) = (
            call.query.non_empty("resourceVersion"),
            call.query.get("resourceVersionMatch"),
        ) {
            let rv: u64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
            if state.changed_since(&store, rv) {
                return Err(ApiError::expired(
                    "The resourceVersion for the provided list is too old.",
                ));
            }
        }
        let after = continued.as_ref().map(|(_, key)| key);
        let objects = match (fields.name(), &rp.namespace) {
            (Some(name), Some(ns)) if after.is_none() => {
                state.get(rt, ns, name).into_iter().collect()
            }
            _ => state.list(&store, rp.namespace.as_deref(), after),
        };
        let list_rv = continued
            .as_ref()
            .map_or(state.resource_version(), |(rv, _)| *rv);
        (objects, list_rv)
    };
    let filtered = objects
        .iter()
        .filter(|o| labels.matches(o) && fields.matches(o));
    let mut items = Vec::new();
    let mut last = None;
    let mut remaining = 0usize;
    for object in filtered {
        if limit > 0 && items.len() == limit {
            remaining += 1;
            continue;
        }
        last = Some(object);
        items.push(list_item(rt, object, call));
    }
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if remaining > 0
        && let Some(last) = last
    {
        metadata["continue"] = json!(encode_continue(
            list_rv,
            str_at(last, "/metadata/namespace"),
            str_at(last, "/metadata/name"),
        ));
        if labels.is_empty() && fields.is_empty() {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let (kind, api_version) = if call.partial_metadata {
        (
            "PartialObjectMetadataList".to_owned(),
            "meta.k8s.io/v1".to_owned(),
        )
    } else {
        (rt.list_kind(), rt.api_version())
    };
    Ok(json_answer(
        200,
        &json!({"kind": kind, "apiVersion": api_version, "metadata": metadata, "items": items}),
    ))
}

/// An object in a list: built-in kinds' items carry no `kind` or
/// `apiVersion`, as the API server writes them.
fn list_item(rt: &ResourceType, object: &Value, call: &Call) -> Value {
    if call.partial_metadata {
        return partial(object);
    }
    let mut item = served(rt, object, call);
    if rt.builtin
        && let Some(m) = item.as_object_mut()
    {
        m.remove("kind");
        m.remove("apiVersion");
    }
    item
}

fn watch(
    shared: &Arc<Shared>,
    call: &Call,
    rt: &Arc<ResourceType>,
    rp: &ResourcePath,
    name: Option<&String>,
) -> Answer {
    let (labels, mut fields) = match selectors(call, rt) {
        Ok(s) => s,
        Err(e) => return error_answer(&e),
    };
    if let Some(name) = name {
        fields = match FieldSelector::parse(
            &format!("metadata.name={name}"),
            &rt.store_key(),
            rt.builtin,
        ) {
            Ok(f) => f,
            Err(e) => return error_answer(&e),
        };
    }
    let initial_events = call.query.flag("sendInitialEvents");
    let rv = match call.query.get("resourceVersion").unwrap_or_default() {
        "" | "0" => None,
        _ if initial_events => None,
        text => match text.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => {
                return error_answer(&ApiError::bad_request(format!(
                    "invalid resource version: {text}"
                )));
            }
        },
    };
    let bookmarks = call.query.flag("allowWatchBookmarks");
    let timeout = call
        .query
        .non_empty("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(DEFAULT_WATCH_TIMEOUT)
        .min(u64::from(u32::MAX));
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let (started, started_rv) = {
        let mut state = shared.lock();
        (
            state.watch(rt, rp.namespace.as_deref(), rv),
            state.resource_version(),
        )
    };
    let (kind, api_version) = (rt.kind.clone(), rt.api_version());
    let view = Arc::clone(rt);
    let partial_metadata = call.partial_metadata;
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let mut start = match started {
            Ok(start) => start,
            Err(error) => {
                let line = json!({"type": "ERROR", "object": error.body}).to_string() + "\n";
                let _ = tx.send(Ok(Bytes::from(line))).await;
                return;
            }
        };
        let render = |event: &Event| -> Option<String> {
            let (kind, object) = filter_event(event, &labels, &fields)?;
            let object = if partial_metadata {
                std::borrow::Cow::Owned(partial(&object))
            } else if !view.builtin && object["apiVersion"] != view.api_version() {
                let mut o = object.into_owned();
                o["apiVersion"] = json!(view.api_version());
                std::borrow::Cow::Owned(o)
            } else {
                object
            };
            Some(format!(
                "{{\"type\":\"{}\",\"object\":{}}}\n",
                kind.as_str(),
                object
            ))
        };
        for event in &start.backlog {
            if let Some(line) = render(event)
                && tx.send(Ok(Bytes::from(line))).await.is_err()
            {
                return;
            }
        }
        let bookmark = |rv: u64, initial_end: bool| {
            let mut metadata =
                json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
            if initial_end {
                metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": metadata}})
                .to_string()
                + "\n"
        };
        if initial_events && bookmarks {
            let rv = start
                .backlog
                .iter()
                .map(|e| e.rv)
                .max()
                .unwrap_or(0)
                .max(started_rv);
            if tx.send(Ok(Bytes::from(bookmark(rv, true)))).await.is_err() {
                return;
            }
        }
        let interval = shared.lock().bookmark_interval;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            tokio::select! {
                event = start.rx.recv() => {
                    let Some(event) = event else { return };
                    if let Some(line) = render(&event)
                        && tx.send(Ok(Bytes::from(line))).await.is_err()
                    {
                        return;
                    }
                }
                _ = ticks.tick(), if bookmarks => {
                    let rv = shared.lock().resource_version();
                    if tx.send(Ok(Bytes::from(bookmark(rv, false)))).await.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(deadline) => return,
                () = shared.shutdown.cancelled() => return,
                () = tx.closed() => return,
            }
        }
    });
    let mut response = Response::new(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ));
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// What a watcher with these selectors sees of an event: an object that
/// stops matching is `DELETED`, one that starts matching `ADDED`.
fn filter_event<'a>(
    event: &'a Event,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Option<(EventKind, std::borrow::Cow<'a, Value>)> {
    use std::borrow::Cow;
    let matches = |o: &Value| labels.matches(o) && fields.matches(o);
    match event.kind {
        EventKind::Added | EventKind::Deleted => {
            matches(&event.object).then(|| (event.kind, Cow::Borrowed(&*event.object)))
        }
        EventKind::Modified => {
            let now = matches(&event.object);
            let before = event.previous.as_deref().is_some_and(matches);
            match (before, now) {
                (true, true) => Some((EventKind::Modified, Cow::Borrowed(&*event.object))),
                (false, true) => Some((EventKind::Added, Cow::Borrowed(&*event.object))),
                (true, false) => {
                    let mut old = event.previous.as_deref().cloned().unwrap_or(Value::Null);
                    old["metadata"]["resourceVersion"] = json!(event.rv.to_string());
                    Some((EventKind::Deleted, Cow::Owned(old)))
                }
                (false, false) => None,
            }
        }
    }
}

fn check_field_manager(call: &Call) -> Result<(), ApiError> {
    if call.manager.len() > 128 {
        return Err(ApiError::invalid_kind(
            "PatchOptions.meta.k8s.io",
            "meta.k8s.io",
            "",
            &[FieldError::invalid(
                "fieldManager",
                json!(call.manager),
                "must be at most 128 characters",
            )],
        ));
    }
    Ok(())
}

async fn create(
    shared: &Arc<Shared>,
    request: Request<Body>,
    call: &Call,
    rt: &ResourceType,
    rp: &ResourcePath,
) -> Result<Answer, ApiError> {
    check_field_manager(call)?;
    let body = read_body(request).await?;
    let object = parse_json(&body, &call.content_type())?;
    let mut state = shared.lock();
    state.written.push(object.clone());
    let created = state.create(
        rt,
        rp.namespace.as_deref(),
        object,
        &call.manager,
        call.dry_run(),
    )?;
    Ok(json_answer(201, &served(rt, &created, call)))
}

async fn replace(
    shared: &Arc<Shared>,
    request: Request<Body>,
    call: &Call,
    rt: &ResourceType,
    rp: &ResourcePath,
    name: &str,
    sub: Sub,
) -> Result<Answer, ApiError> {
    check_field_manager(call)?;
    let body = read_body(request).await?;
    let object = parse_json(&body, &call.content_type())?;
    let mut state = shared.lock();
    state.written.push(object.clone());
    let result = state.replace(
        rt,
        namespace_of(rp),
        name,
        object,
        sub,
        &call.manager,
        call.dry_run(),
    )?;
    Ok(json_answer(200, &served(rt, &result, call)))
}

const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

#[allow(clippy::too_many_arguments)]
async fn patch(
    shared: &Arc<Shared>,
    request: Request<Body>,
    call: &Call,
    rt: &ResourceType,
    rp: &ResourcePath,
    name: &str,
    sub: Sub,
) -> Result<Answer, ApiError> {
    let content_type = call.content_type();
    let accepted: Vec<&str> = PATCH_TYPES
        .iter()
        .copied()
        .filter(|t| rt.builtin || !t.contains("strategic"))
        .collect();
    if !accepted.contains(&content_type.as_str()) {
        return Err(ApiError::unsupported_media_type(&content_type, &accepted));
    }
    let apply = content_type == "application/apply-patch+yaml";
    let force = call.query.flag("force");
    let options_error = |field: FieldError| {
        ApiError::invalid_kind("PatchOptions.meta.k8s.io", "meta.k8s.io", "", &[field])
    };
    if apply && call.query.non_empty("fieldManager").is_none() {
        return Err(options_error(FieldError::required(
            "fieldManager",
            "is required for apply patch",
        )));
    }
    if !apply && call.query.get("force").is_some() {
        return Err(options_error(FieldError::forbidden(
            "force",
            "may not be specified for non-apply patch",
        )));
    }
    check_field_manager(call)?;
    let body = read_body(request).await?;
    let namespace = namespace_of(rp);
    if apply {
        let config = super::yaml::parse(&body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        let mut state = shared.lock();
        state.written.push(config.clone());
        let (object, created) = state.apply(
            rt,
            namespace,
            name,
            &config,
            sub,
            &call.manager,
            force,
            call.dry_run(),
        )?;
        let body = if sub == Sub::Scale {
            (*object).clone()
        } else {
            served(rt, &object, call)
        };
        return Ok(json_answer(if created { 201 } else { 200 }, &body));
    }
    let patch: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let kind = match content_type.as_str() {
        "application/json-patch+json" => PatchKind::Json,
        "application/strategic-merge-patch+json" => PatchKind::Strategic,
        _ => PatchKind::Merge,
    };
    if kind != PatchKind::Json && !patch.is_object() {
        return Err(ApiError::bad_request(
            "error decoding patch: the patch must be a JSON object",
        ));
    }
    let mut state = shared.lock();
    let object = state.patch(
        rt,
        namespace,
        name,
        kind,
        &patch,
        sub,
        &call.manager,
        call.dry_run(),
    )?;
    let body = if sub == Sub::Scale {
        (*object).clone()
    } else {
        served(rt, &object, call)
    };
    Ok(json_answer(200, &body))
}

fn delete_options(call: &Call, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let parsed: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    let mut options = DeleteOptions {
        propagation: parsed["propagationPolicy"].as_str().map(str::to_owned),
        grace_period: parsed["gracePeriodSeconds"].as_i64(),
        uid: parsed
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned),
        resource_version: parsed
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned),
        dry_run: parsed["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "All")),
    };
    if let Some(p) = call.query.non_empty("propagationPolicy") {
        options.propagation = Some(p.to_owned());
    }
    if let Some(g) = call.query.non_empty("gracePeriodSeconds") {
        options.grace_period = g.parse().ok();
    }
    if call.dry_run() {
        options.dry_run = true;
    }
    if parsed["orphanDependents"] == json!(true) && options.propagation.is_none() {
        options.propagation = Some("Orphan".to_owned());
    }
    Ok(options)
}

async fn delete(
    shared: &Arc<Shared>,
    request: Request<Body>,
    call: &Call,
    rt: &ResourceType,
    rp: &ResourcePath,
    name: &str,
) -> Result<Answer, ApiError> {
    let body = read_body(request).await?;
    let options = delete_options(call, &body)?;
    let (object, gone) = shared.lock().delete(rt, namespace_of(rp), name, &options)?;
    Ok(json_answer(200, &deleted_answer(rt, &object, gone, call)))
}

/// What DELETE answers: the object while its deletion is pending, and for
/// the kinds whose storage has `ReturnDeletedObject` (pods, services,
/// namespaces, nodes, service accounts, volumes, claims, storage classes,
/// custom resources); a `Success` status naming it otherwise.
fn deleted_answer(rt: &ResourceType, object: &Value, gone: bool, call: &Call) -> Value {
    let returns_object = !rt.builtin
        || matches!(
            (rt.group.as_str(), rt.plural.as_str()),
            (
                "",
                "pods"
                    | "services"
                    | "namespaces"
                    | "nodes"
                    | "serviceaccounts"
                    | "persistentvolumes"
                    | "persistentvolumeclaims"
            ) | ("storage.k8s.io", "storageclasses")
        );
    if !gone || returns_object {
        return served(rt, object, call);
    }
    let mut details = json!({
        "name": str_at(object, "/metadata/name"),
        "kind": rt.plural,
        "uid": str_at(object, "/metadata/uid"),
    });
    if !rt.group.is_empty() {
        details["group"] = json!(rt.group);
    }
    status_body(200, "", "", Some(details))
}

async fn delete_collection(
    shared: &Arc<Shared>,
    request: Request<Body>,
    call: &Call,
    rt: &ResourceType,
    rp: &ResourcePath,
) -> Result<Answer, ApiError> {
    let (labels, fields) = selectors(call, rt)?;
    let body = read_body(request).await?;
    let options = delete_options(call, &body)?;
    let mut state = shared.lock();
    let names: Vec<(String, String)> = state
        .list(&rt.store_key(), rp.namespace.as_deref(), None)
        .iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
        .map(|o| {
            (
                str_at(o, "/metadata/namespace").to_owned(),
                str_at(o, "/metadata/name").to_owned(),
            )
        })
        .collect();
    let mut items = Vec::new();
    for (ns, name) in names {
        if let Ok((object, _)) = state.delete(rt, &ns, &name, &options) {
            items.push(list_item(rt, &object, call));
        }
    }
    let rv = state.resource_version().to_string();
    Ok(json_answer(
        200,
        &json!({"kind": rt.list_kind(), "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": rv}, "items": items}),
    ))
}

async fn evict(
    shared: &Arc<Shared>,
    request: Request<Body>,
    rt: &ResourceType,
    rp: &ResourcePath,
    name: &str,
) -> Result<Answer, ApiError> {
    let body = read_body(request).await?;
    let eviction: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("error decoding Eviction: {e}")))?
    };
    let options = DeleteOptions {
        grace_period: eviction
            .pointer("/deleteOptions/gracePeriodSeconds")
            .and_then(Value::as_i64),
        ..DeleteOptions::default()
    };
    shared.lock().delete(rt, namespace_of(rp), name, &options)?;
    Ok(json_answer(201, &status_body(201, "", "", None)))
}

fn metrics(shared: &Arc<Shared>, call: &Call, rp: &ResourcePath) -> Answer {
    let state = shared.lock();
    if !state.metrics || rp.version != "v1beta1" || !matches!(rp.plural.as_str(), "pods" | "nodes")
    {
        return error_answer(&ApiError::unknown_path());
    }
    if call.method != Method::GET || call.query.flag("watch") || rp.sub.is_some() {
        return error_answer(&ApiError::method_not_allowed());
    }
    let labels = match LabelSelector::parse(call.query.get("labelSelector").unwrap_or_default()) {
        Ok(l) => l,
        Err(e) => return error_answer(&e),
    };
    if rp.plural == "nodes" {
        if rp.namespace.is_some() {
            return error_answer(&ApiError::unknown_path());
        }
        let node = kubelet::node_metrics();
        return match &rp.name {
            Some(n) if n == kubelet::NODE => json_answer(200, &node),
            Some(n) => error_answer(&ApiError::new(
                404,
                "NotFound",
                format!("nodemetrics.metrics.k8s.io \"{n}\" not found"),
            )),
            None => json_answer(
                200,
                &json!({"kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1",
                        "metadata": {}, "items": [node]}),
            ),
        };
    }
    match &rp.name {
        Some(name) => {
            let Some(namespace) = &rp.namespace else {
                return error_answer(&ApiError::unknown_path());
            };
            let metrics = state
                .get_in("/pods", namespace, name)
                .and_then(|p| kubelet::pod_metrics(&state, &p));
            match metrics {
                Some(m) => json_answer(200, &m),
                None => error_answer(&ApiError::new(
                    404,
                    "NotFound",
                    format!("podmetrics.metrics.k8s.io \"{namespace}/{name}\" not found"),
                )),
            }
        }
        None => {
            let items: Vec<Value> = state
                .list("/pods", rp.namespace.as_deref(), None)
                .iter()
                .filter(|p| labels.matches(p))
                .filter_map(|p| kubelet::pod_metrics(&state, p))
                .collect();
            json_answer(
                200,
                &json!({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1",
                        "metadata": {}, "items": items}),
            )
        }
    }
}
