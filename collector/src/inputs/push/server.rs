//! The HTTP side of a push input: the listener its task runs, the routes of each protocol, and
//! the path of one request (auth → concurrency → body → parse → limits → labels → delivery),
//! answered in the shape each protocol's clients expect.

use std::future::IntoFuture as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::future::{BoxFuture, FutureExt};
use metricshard_crds::PushProtocol;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::auth::Credentials;
use super::{PushSettings, body, falcon, influx, opentsdb, protocol_name, remote_write};
use crate::engine::{Destination, GatherError, Listener, ListenerReport, TaskKey};
use crate::outputs::influx::Precision;
use crate::relabel::relabel_sample;
use crate::sample::Sample;
use crate::schedule::unix_nanos;
use crate::telemetry::PushRequestLabels;

/// How long in-flight requests may take to finish once the input is stopped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The listener of one push input.
pub struct PushListener {
    key: TaskKey,
    settings: PushSettings,
}

impl PushListener {
    /// The listener of input `key`.
    pub fn new(key: TaskKey, settings: PushSettings) -> Self {
        Self { key, settings }
    }
}

fn listen_error(message: String) -> GatherError {
    GatherError::Source { category: "listen", message }
}

impl Listener for PushListener {
    fn serve(
        &self,
        destination: Arc<dyn Destination>,
        report: ListenerReport,
        cancel: CancellationToken,
    ) -> BoxFuture<'_, Result<(), GatherError>> {
        async move {
            let credentials = match &self.settings.auth {
                Some(source) => Some(source.load().map_err(|error| listen_error(format!("spec.source.push.auth: {error}")))?),
                None => None,
            };
            let socket = tokio::net::TcpListener::bind(&self.settings.listen)
                .await
                .map_err(|error| listen_error(format!("cannot listen on {}: {error}", self.settings.listen)))?;
            let address = socket.local_addr().map(|a| a.to_string()).unwrap_or_default();
            tracing::info!(input = %self.key, %address, protocols = ?self.settings.protocols, "push listener serving");
            report.serving();
            let state = Arc::new(Receiver {
                settings: self.settings.clone(),
                credentials,
                permits: Semaphore::new(self.settings.max_concurrent),
                destination,
                report,
            });
            let server = axum::serve(socket, router(&state)).with_graceful_shutdown(cancel.clone().cancelled_owned()).into_future();
            tokio::pin!(server);
            let ended = tokio::select! {
                result = &mut server => Some(result),
                () = cancel.cancelled() => None,
            };
            match ended {
                Some(result) => {
                    result.map_err(|error| listen_error(format!("listener on {address} failed: {error}")))?;
                    Ok(())
                }
                None => {
                    // Let requests in flight finish, within bounds: a client that trickles its
                    // body must not keep the input's task (and its port) alive.
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, server).await;
                    tracing::info!(input = %self.key, %address, "push listener closed");
                    Ok(())
                }
            }
        }
        .boxed()
    }
}

/// What every request of one listener shares.
struct Receiver {
    settings: PushSettings,
    credentials: Option<Credentials>,
    permits: Semaphore,
    destination: Arc<dyn Destination>,
    report: ListenerReport,
}

/// The endpoint a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    RemoteWrite,
    InfluxV1,
    InfluxV2,
    OpenTsdb,
    Falcon,
}

impl Endpoint {
    fn protocol(self) -> PushProtocol {
        match self {
            Self::RemoteWrite => PushProtocol::RemoteWrite,
            Self::InfluxV1 | Self::InfluxV2 => PushProtocol::Influx,
            Self::OpenTsdb => PushProtocol::OpenTsdb,
            Self::Falcon => PushProtocol::OpenFalcon,
        }
    }
}

type QueryPairs = Query<Vec<(String, String)>>;

fn router(state: &Arc<Receiver>) -> axum::Router {
    let mut router = axum::Router::new();
    let route = |endpoint: Endpoint| {
        let state = state.clone();
        post(move |Query(query): QueryPairs, headers: HeaderMap, body: Body| handle(state, endpoint, query, headers, body))
    };
    for protocol in &state.settings.protocols {
        router = match protocol {
            PushProtocol::RemoteWrite => router.route("/api/v1/write", route(Endpoint::RemoteWrite)),
            PushProtocol::Influx => router
                .route("/write", route(Endpoint::InfluxV1))
                .route("/api/v2/write", route(Endpoint::InfluxV2))
                // Influx clients check the server with /ping before writing.
                .route("/ping", get(|| async { StatusCode::NO_CONTENT }).head(|| async { StatusCode::NO_CONTENT })),
            PushProtocol::OpenTsdb => router.route("/api/put", route(Endpoint::OpenTsdb)),
            PushProtocol::OpenFalcon => router.route("/api/push", route(Endpoint::Falcon)),
        };
    }
    router
}

/// Why a request was refused.
struct Refusal {
    status: StatusCode,
    outcome: &'static str,
    message: String,
    /// Samples refused, when known.
    samples: Option<usize>,
    /// OpenTSDB's per-point errors.
    invalid_points: Vec<opentsdb::InvalidPoint>,
    /// Points in an OpenTSDB body.
    total_points: usize,
}

impl Refusal {
    fn new(status: StatusCode, outcome: &'static str, message: impl Into<String>) -> Self {
        Self { status, outcome, message: message.into(), samples: None, invalid_points: Vec::new(), total_points: 0 }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl From<body::BodyError> for Refusal {
    fn from(error: body::BodyError) -> Self {
        let status = match &error {
            body::BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            body::BodyError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            body::BodyError::Corrupt { .. } | body::BodyError::Read(_) => StatusCode::BAD_REQUEST,
        };
        Self::new(status, error.outcome(), error.to_string())
    }
}

async fn handle(state: Arc<Receiver>, endpoint: Endpoint, query: Vec<(String, String)>, headers: HeaderMap, body: Body) -> Response {
    let protocol = protocol_name(endpoint.protocol());
    let result = receive(&state, endpoint, &query, &headers, body).await;
    let telemetry = state.report.telemetry();
    let labels = |outcome| PushRequestLabels { input: state.report.key().to_string(), protocol, outcome };
    match result {
        Ok(samples) => {
            telemetry.push_requests.get_or_create(&labels("accepted")).inc();
            telemetry.push_samples.get_or_create(&labels("accepted")).inc_by(samples as u64);
            state.report.accepted(samples);
            accepted_response(endpoint, &query, samples)
        }
        Err(refusal) => {
            telemetry.push_requests.get_or_create(&labels(refusal.outcome)).inc();
            if let Some(samples) = refusal.samples {
                telemetry.push_samples.get_or_create(&labels(refusal.outcome)).inc_by(samples as u64);
            }
            tracing::debug!(input = %state.report.key(), protocol, status = %refusal.status, "push refused: {}", refusal.message);
            state.report.rejected("push", format!("{protocol} push refused with {}: {}", refusal.status.as_u16(), refusal.message));
            refused_response(endpoint, &query, refusal, state.credentials.as_ref())
        }
    }
}

/// The whole path of one request; returns the number of samples delivered.
async fn receive(state: &Receiver, endpoint: Endpoint, query: &[(String, String)], headers: &HeaderMap, body: Body) -> Result<usize, Refusal> {
    if let Some(credentials) = &state.credentials
        && !credentials.admits(headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes))
    {
        return Err(Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong credentials"));
    }
    // Bounded work in flight instead of an unbounded queue: the client retries later.
    let Ok(_permit) = state.permits.try_acquire() else {
        return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "too many concurrent requests; retry later"));
    };
    let limit = state.settings.max_body_bytes;
    let content_length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let raw = body::read_limited(body, content_length, limit).await?;
    let encoding = headers.get(header::CONTENT_ENCODING).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let param = |name: &str| query.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
    let now_ms = i64::try_from(unix_nanos(SystemTime::now()) / 1_000_000).unwrap_or(i64::MAX);
    let parse = match endpoint {
        Endpoint::RemoteWrite => {
            if !matches!(encoding.as_deref().map(str::trim), None | Some("snappy")) {
                return Err(Refusal::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_encoding",
                    format!("remote write bodies are snappy blocks; Content-Encoding {encoding:?} is not supported"),
                ));
            }
            Parse::RemoteWrite(raw)
        }
        Endpoint::InfluxV1 | Endpoint::InfluxV2 => {
            let precision = influx_precision(endpoint, param("precision").as_deref())?;
            let database = if endpoint == Endpoint::InfluxV1 { param("db") } else { param("bucket") };
            Parse::Influx { bytes: body::decode_content(raw, encoding.as_deref(), limit)?, precision, database }
        }
        Endpoint::OpenTsdb => Parse::OpenTsdb(body::decode_content(raw, encoding.as_deref(), limit)?),
        Endpoint::Falcon => Parse::Falcon(body::decode_content(raw, encoding.as_deref(), limit)?),
    };
    // Parsing megabytes is CPU work: keep it off the threads that serve other requests, and a
    // bug in a parser costs this request a 500, nothing else.
    let mut samples = tokio::task::spawn_blocking(move || parse.run(limit, now_ms))
        .await
        .map_err(|error| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("parser failed: {error}")))??;
    if samples.len() > state.settings.max_samples {
        let mut refusal = Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_samples",
            format!("{} samples exceed the limit of {} per request", samples.len(), state.settings.max_samples),
        );
        refusal.samples = Some(samples.len());
        return Err(refusal);
    }
    let count = samples.len();
    if count == 0 {
        return Ok(0);
    }
    if !state.settings.extra_labels.is_empty() {
        for sample in &mut samples {
            for label in &state.settings.extra_labels {
                sample.labels.set(label.name.clone(), label.value.clone());
            }
        }
    }
    if !state.settings.metric_relabel.is_empty() {
        // Regexes over every sample: CPU work like the parse, off the serving threads.
        let rules = Arc::clone(&state.settings.metric_relabel);
        samples = tokio::task::spawn_blocking(move || samples.into_iter().filter_map(|s| relabel_sample(s, &rules)).collect())
            .await
            .map_err(|error| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("relabeling failed: {error}")))?;
        if samples.is_empty() {
            return Ok(count);
        }
    }
    if tokio::time::timeout(super::DELIVERY_TIMEOUT, state.destination.deliver(samples)).await.is_err() {
        let mut refusal = Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!("outputs did not take the samples within {:?}; retry later", super::DELIVERY_TIMEOUT),
        );
        refusal.samples = Some(count);
        return Err(refusal);
    }
    Ok(count)
}

/// A body to parse, with what its protocol needs.
enum Parse {
    RemoteWrite(Vec<u8>),
    Influx { bytes: Vec<u8>, precision: Precision, database: Option<String> },
    OpenTsdb(Vec<u8>),
    Falcon(Vec<u8>),
}

impl Parse {
    fn run(self, limit: usize, now_ms: i64) -> Result<Vec<Sample>, Refusal> {
        match self {
            Self::RemoteWrite(bytes) => remote_write::parse_remote_write(&bytes, limit).map_err(|error| match error {
                remote_write::RemoteWriteParseError::TooLarge { .. } => {
                    Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", error.to_string())
                }
                other => Refusal::bad_request(other.to_string()),
            }),
            Self::Influx { bytes, precision, database } => {
                let mut samples = influx::parse_line_protocol(&bytes, precision, now_ms).map_err(|e| Refusal::bad_request(e.to_string()))?;
                if let Some(database) = database.filter(|database| !database.is_empty()) {
                    for sample in &mut samples {
                        sample.labels.set_if_absent("db", &database);
                    }
                }
                Ok(samples)
            }
            Self::OpenTsdb(bytes) => opentsdb::parse_put(&bytes).map_err(|error| {
                let mut refusal = Refusal::bad_request(error.to_string());
                if let opentsdb::OpenTsdbParseError::InvalidPoints { total, invalid } = error {
                    refusal.samples = Some(total);
                    refusal.total_points = total;
                    refusal.invalid_points = invalid;
                }
                refusal
            }),
            Self::Falcon(bytes) => falcon::parse_falcon(&bytes, now_ms).map_err(|e| Refusal::bad_request(e.to_string())),
        }
    }
}

/// The `precision` parameter: 1.x takes `n`/`ns`, `u`/`us`, `ms`, `s` (and `m`, `h`, which we
/// refuse), defaulting to nanoseconds; 2.x takes `ns`, `us`, `ms`, `s`.
fn influx_precision(endpoint: Endpoint, precision: Option<&str>) -> Result<Precision, Refusal> {
    match (endpoint, precision.unwrap_or("")) {
        (_, "" | "ns") | (Endpoint::InfluxV1, "n") => Ok(Precision::Nanoseconds),
        (_, "us") | (Endpoint::InfluxV1, "u" | "µ") => Ok(Precision::Microseconds),
        (_, "ms") => Ok(Precision::Milliseconds),
        (_, "s") => Ok(Precision::Seconds),
        (_, other) => Err(Refusal::bad_request(format!("unsupported precision {other:?}; use ns, us, ms or s"))),
    }
}

fn has_param(query: &[(String, String)], name: &str) -> bool {
    query.iter().any(|(key, _)| key == name)
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

fn accepted_response(endpoint: Endpoint, query: &[(String, String)], samples: usize) -> Response {
    match endpoint {
        Endpoint::RemoteWrite | Endpoint::InfluxV1 | Endpoint::InfluxV2 => StatusCode::NO_CONTENT.into_response(),
        // OpenTSDB answers 204, or counts with `summary`, and also the (empty) errors with `details`.
        Endpoint::OpenTsdb if has_param(query, "details") => {
            json(StatusCode::OK, &serde_json::json!({"errors": [], "failed": 0, "success": samples}))
        }
        Endpoint::OpenTsdb if has_param(query, "summary") => {
            json(StatusCode::OK, &serde_json::json!({"failed": 0, "success": samples}))
        }
        Endpoint::OpenTsdb => StatusCode::NO_CONTENT.into_response(),
        // The shape of the transfer's TransferResponse.
        Endpoint::Falcon => json(StatusCode::OK, &serde_json::json!({"message": "ok", "total": samples, "invalid": 0})),
    }
}

fn refused_response(endpoint: Endpoint, query: &[(String, String)], refusal: Refusal, credentials: Option<&Credentials>) -> Response {
    let status = refusal.status;
    let mut response = match endpoint {
        Endpoint::RemoteWrite | Endpoint::Falcon => (status, refusal.message).into_response(),
        Endpoint::InfluxV1 => json(status, &serde_json::json!({"error": refusal.message})),
        Endpoint::InfluxV2 => {
            let code = match status {
                StatusCode::UNAUTHORIZED => "unauthorized",
                StatusCode::PAYLOAD_TOO_LARGE => "request too large",
                StatusCode::SERVICE_UNAVAILABLE => "unavailable",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported media type",
                _ => "invalid",
            };
            json(status, &serde_json::json!({"code": code, "message": refusal.message}))
        }
        Endpoint::OpenTsdb if !refusal.invalid_points.is_empty() && has_param(query, "details") => {
            let errors: Vec<serde_json::Value> = refusal
                .invalid_points
                .iter()
                .map(|point| serde_json::json!({"datapoint": point.datapoint, "error": point.error}))
                .collect();
            json(status, &serde_json::json!({"errors": errors, "failed": refusal.total_points, "success": 0}))
        }
        Endpoint::OpenTsdb if refusal.total_points > 0 && has_param(query, "summary") => {
            json(status, &serde_json::json!({"failed": refusal.total_points, "success": 0}))
        }
        Endpoint::OpenTsdb => {
            json(status, &serde_json::json!({"error": {"code": status.as_u16(), "message": refusal.message}}))
        }
    };
    match status {
        StatusCode::SERVICE_UNAVAILABLE => {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        StatusCode::UNAUTHORIZED => {
            let challenge = match credentials {
                Some(Credentials::Basic { .. }) => "Basic realm=\"metricshard\"",
                _ => "Bearer realm=\"metricshard\"",
            };
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        _ => {}
    }
    response
}
