//! `--metrics`: Prometheus metrics, served in the classic text format (version 0.0.4) that
//! Prometheus scrapes and `promtool check metrics` checks.
//!
//! One prometheus-client registry with the prefix `wsproxy`, built at start-up. Every label is a
//! closed set written out here, never a token, a session id or an address, and every series exists
//! from 0 on, so a rate reads 0 rather than "no data". The series are resolved once into plain
//! counters and gauges (atomics), so recording is one atomic add and no lookup. Recording happens
//! in a few places: a connection's [`Tally`] (open while the connection lives, counted by its
//! outcome when it ends), the relay's report at the end of a session (bytes are counted there,
//! not per read), the token lookup, the wrapped command's supervisor and the sessions manager.
//! With `--metrics` off there is no `Metrics` at all: each of those places skips a `None`.

use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Response, StatusCode};
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::http::web::{Body, sized_response, text_response};
use crate::sessions::manager::Refusal as Reservation;
use crate::sessions::registry::ReserveError;
use crate::sessions::state::State;

/// `Content-Type` of a scrape: the classic text format.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE as TEXT_FORMAT;

/// Upper bounds of the handshake histogram, in seconds: a local client takes about a
/// millisecond, a slow TLS client or token source much more; `--handshake-timeout` is 10 s.
const HANDSHAKE_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the session histogram, in seconds: from a refused login to a working day.
const SESSION_BUCKETS: [f64; 11] = [
    0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 10800.0, 28800.0, 86400.0,
];
/// Upper bounds of the launch histogram (launch to listening), in seconds; `start_timeout` is
/// usually under a minute.
const LAUNCH_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// How a connection on the main port ended; each connection counts once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A WebSocket session reached its target and relayed.
    Relayed,
    /// The upgrade went through but the target could not be reached (close 1011).
    TargetFailed,
    /// The WebSocket request got an error answer instead of the upgrade (`reason` says which).
    Refused(Refusal),
    /// No complete, valid request: closed or timed out before one, malformed HTTP, or an upgrade
    /// that breaks the WebSocket rules.
    HandshakeFailed,
    /// The TLS handshake failed (or a TLS client met a server without a certificate).
    TlsFailed,
    /// Plain HTTP only: static files, the API, the metrics, 405.
    Http,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// 400: no token in the request.
    NoToken,
    /// 404: the token names nothing (or has expired).
    UnknownToken,
    /// 503: the token source could not answer.
    Unavailable,
    /// 401: no or wrong credentials.
    Unauthorized,
    /// 403: an auth plugin said no.
    Forbidden,
    /// 429: too many failures from the address.
    Throttled,
    /// `--ssl-only` and a plain client.
    TlsRequired,
    /// Any other refusal.
    Other,
}

impl Refusal {
    #[cfg(test)]
    const ALL: [Refusal; 8] = [
        Refusal::NoToken,
        Refusal::UnknownToken,
        Refusal::Unavailable,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::Throttled,
        Refusal::TlsRequired,
        Refusal::Other,
    ];

    /// The refusal an answer of the gate (throttle, resolve, auth) stands for.
    pub fn of(status: StatusCode) -> Refusal {
        match status {
            StatusCode::BAD_REQUEST => Refusal::NoToken,
            StatusCode::NOT_FOUND => Refusal::UnknownToken,
            StatusCode::SERVICE_UNAVAILABLE => Refusal::Unavailable,
            StatusCode::UNAUTHORIZED => Refusal::Unauthorized,
            StatusCode::FORBIDDEN => Refusal::Forbidden,
            StatusCode::TOO_MANY_REQUESTS => Refusal::Throttled,
            _ => Refusal::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Refusal::NoToken => "no_token",
            Refusal::UnknownToken => "unknown_token",
            Refusal::Unavailable => "unavailable",
            Refusal::Unauthorized => "unauthorized",
            Refusal::Forbidden => "forbidden",
            Refusal::Throttled => "throttled",
            Refusal::TlsRequired => "tls_required",
            Refusal::Other => "other",
        }
    }
}

impl Outcome {
    /// Every outcome, in the order of `index`.
    const ALL: [Outcome; 13] = [
        Outcome::Relayed,
        Outcome::TargetFailed,
        Outcome::HandshakeFailed,
        Outcome::TlsFailed,
        Outcome::Http,
        Outcome::Refused(Refusal::NoToken),
        Outcome::Refused(Refusal::UnknownToken),
        Outcome::Refused(Refusal::Unavailable),
        Outcome::Refused(Refusal::Unauthorized),
        Outcome::Refused(Refusal::Forbidden),
        Outcome::Refused(Refusal::Throttled),
        Outcome::Refused(Refusal::TlsRequired),
        Outcome::Refused(Refusal::Other),
    ];

    fn index(self) -> usize {
        match self {
            Outcome::Relayed => 0,
            Outcome::TargetFailed => 1,
            Outcome::HandshakeFailed => 2,
            Outcome::TlsFailed => 3,
            Outcome::Http => 4,
            Outcome::Refused(refusal) => 5 + refusal as usize,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Outcome::Relayed => "relayed",
            Outcome::TargetFailed => "target_failed",
            Outcome::Refused(_) => "refused",
            Outcome::HandshakeFailed => "handshake_failed",
            Outcome::TlsFailed => "tls_failed",
            Outcome::Http => "http",
        }
    }
}

/// `outcome="..."`, and for a refusal `reason="..."` too.
impl EncodeLabelSet for Outcome {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        ("outcome", self.name()).encode(encoder.encode_label())?;
        if let Outcome::Refused(refusal) = self {
            ("reason", refusal.name()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Which way relayed bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Direction {
    ToTarget,
    ToClient,
}

impl EncodeLabelSet for Direction {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        let name = match self {
            Direction::ToTarget => "to_target",
            Direction::ToClient => "to_client",
        };
        ("direction", name).encode(encoder.encode_label())
    }
}

/// What a token lookup gave (a token plugin's, or an on-demand session's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LookupResult {
    Found,
    Unknown,
    /// The source could not answer (down, an error).
    Unavailable,
    /// The source did not answer within `--token-timeout`.
    Timeout,
}

impl LookupResult {
    const ALL: [LookupResult; 4] = [
        LookupResult::Found,
        LookupResult::Unknown,
        LookupResult::Unavailable,
        LookupResult::Timeout,
    ];
}

impl EncodeLabelSet for LookupResult {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        let name = match self {
            LookupResult::Found => "found",
            LookupResult::Unknown => "unknown",
            LookupResult::Unavailable => "unavailable",
            LookupResult::Timeout => "timeout",
        };
        ("result", name).encode(encoder.encode_label())
    }
}

/// How the wrapped command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Exit {
    /// Exit code 0.
    Success,
    /// Another exit code.
    Failure,
    /// Killed by a signal it did not get from wsproxy.
    Signal,
    /// Stopped by wsproxy: it never bound its port.
    NoBind,
}

impl Exit {
    const ALL: [Exit; 4] = [Exit::Success, Exit::Failure, Exit::Signal, Exit::NoBind];

    fn of(status: Option<ExitStatus>) -> Exit {
        match status {
            None => Exit::NoBind,
            Some(status) if status.success() => Exit::Success,
            Some(status) if status.signal().is_some() => Exit::Signal,
            Some(_) => Exit::Failure,
        }
    }
}

impl EncodeLabelSet for Exit {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        let name = match self {
            Exit::Success => "success",
            Exit::Failure => "failure",
            Exit::Signal => "signal",
            Exit::NoBind => "no_bind",
        };
        ("status", name).encode(encoder.encode_label())
    }
}

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Rejection {
    UnknownService,
    Forbidden,
    BadOption,
    PerUserLimit,
    Full,
    StoreUnavailable,
}

impl Rejection {
    const ALL: [Rejection; 6] = [
        Rejection::UnknownService,
        Rejection::Forbidden,
        Rejection::BadOption,
        Rejection::PerUserLimit,
        Rejection::Full,
        Rejection::StoreUnavailable,
    ];

    fn of(refusal: &Reservation) -> Rejection {
        match refusal {
            Reservation::UnknownService => Rejection::UnknownService,
            Reservation::Forbidden => Rejection::Forbidden,
            Reservation::BadOption(_) => Rejection::BadOption,
            Reservation::Limit(ReserveError::PerUserLimit { .. }) => Rejection::PerUserLimit,
            Reservation::Limit(ReserveError::Full { .. }) => Rejection::Full,
            Reservation::Limit(ReserveError::Store(_)) | Reservation::Unavailable(_) => Rejection::StoreUnavailable,
        }
    }
}

impl EncodeLabelSet for Rejection {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        let name = match self {
            Rejection::UnknownService => "unknown_service",
            Rejection::Forbidden => "forbidden",
            Rejection::BadOption => "bad_option",
            Rejection::PerUserLimit => "per_user_limit",
            Rejection::Full => "full",
            Rejection::StoreUnavailable => "store_unavailable",
        };
        ("reason", name).encode(encoder.encode_label())
    }
}

/// The states an on-demand session is counted in while it lives (a gauge each) ...
const LIVE: [State; 4] = [State::Reserved, State::Starting, State::Running, State::Lingering];
/// ... and the ones it ends in (a counter each).
const ENDED: [State; 3] = [State::Stopped, State::Failed, State::Expired];

fn state_name(state: State) -> &'static str {
    match state {
        State::Reserved => "reserved",
        State::Starting => "starting",
        State::Running => "running",
        State::Lingering => "lingering",
        State::Stopped => "stopped",
        State::Failed => "failed",
        State::Expired => "expired",
    }
}

/// `service="..."` (a name from the services file, so a closed set) and `state="..."`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServiceState {
    service: String,
    state: &'static str,
}

impl EncodeLabelSet for ServiceState {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        ("service", self.service.as_str()).encode(encoder.encode_label())?;
        ("state", self.state).encode(encoder.encode_label())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServiceLabel {
    service: String,
}

impl EncodeLabelSet for ServiceLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        ("service", self.service.as_str()).encode(encoder.encode_label())
    }
}

fn launch_histogram() -> Histogram {
    Histogram::new(LAUNCH_BUCKETS)
}

/// What the metrics cover beyond the connections: the parts this run has.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Wrap mode: the command's starts and exits.
    pub wrapped: bool,
    /// `--sessions`: the services' names, in the services file's order.
    pub services: Option<Vec<String>>,
}

/// Every metric of this process, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    /// By `Outcome::index`.
    connections: Vec<Counter>,
    connections_open: Gauge,
    sessions_open: Gauge,
    bytes_to_target: Counter,
    bytes_to_client: Counter,
    session_duration: Histogram,
    handshake_duration: Histogram,
    /// By `LookupResult` in `LookupResult::ALL` order.
    lookups: Vec<Counter>,
    wrapped: Option<Wrapped>,
    ondemand: Option<OnDemand>,
}

struct Wrapped {
    starts: Counter,
    /// By `Exit` in `Exit::ALL` order.
    exits: Vec<Counter>,
}

struct OnDemand {
    /// By service index (the services file's order).
    services: Vec<PerService>,
    /// By `Rejection` in `Rejection::ALL` order.
    rejections: Vec<Counter>,
}

struct PerService {
    name: String,
    /// By state in `LIVE` order.
    live: Vec<Gauge>,
    /// By state in `ENDED` order.
    ended: Vec<Counter>,
    launch: Histogram,
}

impl Metrics {
    pub fn new(scope: &Scope) -> Metrics {
        let mut registry = Registry::with_prefix("wsproxy");
        registry.register(
            "build",
            "The wsproxy version; always 1",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );

        let family = Family::<Outcome, Counter>::default();
        registry.register(
            "connections",
            "Connections accepted on the main port, counted when they end, by outcome: relayed (a WebSocket \
             session reached its target), target_failed (upgraded, but the target could not be reached), \
             refused (the WebSocket request got an error answer; reason says why), handshake_failed (closed, \
             timed out or malformed before a valid request), tls_failed, http (files, API or metrics only)",
            family.clone(),
        );
        let connections = Outcome::ALL.iter().map(|o| family.get_or_create_owned(o)).collect();
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Connections open on the main port now, in any phase",
            connections_open.clone(),
        );
        let sessions_open = Gauge::default();
        registry.register(
            "sessions_open",
            "WebSocket sessions open now (connecting to their target or relaying)",
            sessions_open.clone(),
        );
        let bytes = Family::<Direction, Counter>::default();
        registry.register(
            "bytes",
            "Payload bytes relayed, to_target (from clients) and to_client, counted when each session ends",
            bytes.clone(),
        );
        let bytes_to_target = bytes.get_or_create_owned(&Direction::ToTarget);
        let bytes_to_client = bytes.get_or_create_owned(&Direction::ToClient);
        let session_duration = Histogram::new(SESSION_BUCKETS);
        registry.register_with_unit(
            "session_duration",
            "How long WebSocket sessions lasted, from the upgrade to the close",
            Unit::Seconds,
            session_duration.clone(),
        );
        let handshake_duration = Histogram::new(HANDSHAKE_BUCKETS);
        registry.register_with_unit(
            "handshake_duration",
            "Time from accepting a connection to its WebSocket upgrade: TLS, the HTTP request, the token \
             lookup and auth",
            Unit::Seconds,
            handshake_duration.clone(),
        );
        let family = Family::<LookupResult, Counter>::default();
        registry.register(
            "token_lookups",
            "Token lookups (a token plugin's or an on-demand session's) by result",
            family.clone(),
        );
        let lookups = LookupResult::ALL
            .iter()
            .map(|l| family.get_or_create_owned(l))
            .collect();

        let wrapped = scope.wrapped.then(|| {
            let starts = Counter::default();
            registry.register("wrapped_starts", "Starts of the wrapped command", starts.clone());
            let family = Family::<Exit, Counter>::default();
            registry.register(
                "wrapped_exits",
                "Ends of the wrapped command: success (exit code 0), failure (another code), signal, no_bind \
                 (stopped by wsproxy: it never bound its port)",
                family.clone(),
            );
            let exits = Exit::ALL.iter().map(|e| family.get_or_create_owned(e)).collect();
            Wrapped { starts, exits }
        });

        let ondemand = scope.services.as_ref().map(|names| {
            let sessions = Family::<ServiceState, Gauge>::default();
            registry.register(
                "ondemand_sessions",
                "On-demand sessions now, by service and state (reserved, starting, running, lingering)",
                sessions.clone(),
            );
            let ended = Family::<ServiceState, Counter>::default();
            registry.register(
                "ondemand_sessions_ended",
                "On-demand sessions ended, by service and final state (stopped, failed, expired)",
                ended.clone(),
            );
            let launch = Family::<ServiceLabel, Histogram, fn() -> Histogram>::new_with_constructor(launch_histogram);
            registry.register_with_unit(
                "ondemand_launch_duration",
                "Time from launching an on-demand session's command to its listening, by service",
                Unit::Seconds,
                launch.clone(),
            );
            let rejections = Family::<Rejection, Counter>::default();
            registry.register(
                "ondemand_rejections",
                "Reservations refused by the sessions API, by reason",
                rejections.clone(),
            );
            let services = names
                .iter()
                .map(|name| {
                    let labels = |state: &State| ServiceState {
                        service: name.clone(),
                        state: state_name(*state),
                    };
                    PerService {
                        name: name.clone(),
                        live: LIVE.iter().map(|s| sessions.get_or_create_owned(&labels(s))).collect(),
                        ended: ENDED.iter().map(|s| ended.get_or_create_owned(&labels(s))).collect(),
                        launch: launch.get_or_create_owned(&ServiceLabel { service: name.clone() }),
                    }
                })
                .collect();
            let rejections = Rejection::ALL
                .iter()
                .map(|r| rejections.get_or_create_owned(r))
                .collect();
            OnDemand { services, rejections }
        });

        Metrics {
            registry,
            connections,
            connections_open,
            sessions_open,
            bytes_to_target,
            bytes_to_client,
            session_duration,
            handshake_duration,
            lookups,
            wrapped,
            ondemand,
        }
    }

    /// Every metric in the classic text format, with HELP and TYPE for each family.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail; an error would come from the crate and leave the text partial.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry) {
            tracing::warn!("cannot encode the metrics: {e}");
        }
        text
    }

    /// The answer to a request for `/metrics`: GET or HEAD, else 405.
    pub fn respond(&self, method: &Method) -> Response<Body> {
        if method != Method::GET && method != Method::HEAD {
            let mut response = text_response(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed: GET /metrics");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let mut response = sized_response(StatusCode::OK, Bytes::from(self.encode()));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
        response
    }

    /// A WebSocket session starts (it connects to its target, then relays).
    pub fn session_opened(&self) {
        self.sessions_open.inc();
    }

    pub fn session_closed(&self) {
        self.sessions_open.dec();
    }

    /// A session that relayed has ended: its bytes each way and how long it lasted.
    pub fn session_ended(&self, to_target: u64, to_client: u64, lasted: Duration) {
        self.bytes_to_target.inc_by(to_target);
        self.bytes_to_client.inc_by(to_client);
        self.session_duration.observe(lasted.as_secs_f64());
    }

    pub fn token_lookup(&self, result: LookupResult) {
        let index = LookupResult::ALL.iter().position(|l| *l == result).unwrap_or(0);
        self.lookups[index].inc();
    }

    pub fn wrapped_started(&self) {
        if let Some(wrapped) = &self.wrapped {
            wrapped.starts.inc();
        }
    }

    /// The wrapped command ended with `status`, or (`None`) was stopped for never binding its port.
    pub fn wrapped_exited(&self, status: Option<ExitStatus>) {
        if let Some(wrapped) = &self.wrapped {
            let exit = Exit::of(status);
            let index = Exit::ALL.iter().position(|e| *e == exit).unwrap_or(0);
            wrapped.exits[index].inc();
        }
    }

    /// The series of `service`; `None` for one a reload added (its series come with a restart).
    fn per_service(&self, service: &str) -> Option<&PerService> {
        self.ondemand.as_ref()?.services.iter().find(|s| s.name == service)
    }

    /// An on-demand session of `service` moved from `from` (`None`: it is new) to `to`.
    pub fn ondemand_moved(&self, service: &str, from: Option<State>, to: State) {
        let Some(per) = self.per_service(service) else {
            return;
        };
        if from == Some(to) {
            return;
        }
        if let Some(i) = from.and_then(|from| LIVE.iter().position(|s| *s == from)) {
            per.live[i].dec();
        }
        if let Some(i) = LIVE.iter().position(|s| *s == to) {
            per.live[i].inc();
        } else if let Some(i) = ENDED.iter().position(|s| *s == to) {
            per.ended[i].inc();
        }
    }

    /// An on-demand session counted in `from` is no longer this instance's (another launched it).
    pub fn ondemand_gone(&self, service: &str, from: State) {
        let Some(per) = self.per_service(service) else {
            return;
        };
        if let Some(i) = LIVE.iter().position(|s| *s == from) {
            per.live[i].dec();
        }
    }

    /// `service` launched a command that listened after `took`.
    pub fn ondemand_launched(&self, service: &str, took: Duration) {
        if let Some(per) = self.per_service(service) {
            per.launch.observe(took.as_secs_f64());
        }
    }

    pub fn ondemand_rejected(&self, refusal: &Reservation) {
        if let Some(ondemand) = &self.ondemand {
            let rejection = Rejection::of(refusal);
            let index = Rejection::ALL.iter().position(|r| *r == rejection).unwrap_or(0);
            ondemand.rejections[index].inc();
        }
    }
}

/// One connection on the main port, as the metrics see it: counted open from `new` and, when
/// dropped, counted once by `outcome`, which each step sets to what went wrong if it stopped there.
pub struct Tally<'a> {
    on: Option<(&'a Metrics, Instant)>,
    pub outcome: Outcome,
}

impl<'a> Tally<'a> {
    /// A connection just accepted: until a request arrives, its end would be a failed handshake.
    pub fn new(metrics: Option<&'a Metrics>) -> Tally<'a> {
        if let Some(metrics) = metrics {
            metrics.connections_open.inc();
        }
        Tally {
            on: metrics.map(|m| (m, Instant::now())),
            outcome: Outcome::HandshakeFailed,
        }
    }

    /// The WebSocket upgrade went through: the time since the accept is the handshake's.
    pub fn upgraded(&self) {
        if let Some((metrics, accepted)) = self.on {
            metrics.handshake_duration.observe(accepted.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        if let Some((metrics, _)) = self.on {
            metrics.connections_open.dec();
            metrics.connections[self.outcome.index()].inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Metrics {
        Metrics::new(&Scope {
            wrapped: true,
            services: Some(vec!["desktop".into(), "serial".into()]),
        })
    }

    /// The value of the one sample line that starts with `series ` (name and labels as encoded).
    fn sample(text: &str, series: &str) -> f64 {
        let prefix = format!("{series} ");
        let values: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix(&prefix)).collect();
        assert_eq!(values.len(), 1, "{series}: {values:?} in\n{text}");
        values[0].parse().unwrap()
    }

    #[test]
    fn indexes_follow_the_lists() {
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(outcome.index(), i, "{outcome:?}");
        }
        assert_eq!(Outcome::ALL.len(), 5 + Refusal::ALL.len());
        for refusal in Refusal::ALL {
            assert!(Outcome::ALL.contains(&Outcome::Refused(refusal)));
        }
    }

    #[test]
    fn every_series_starts_at_zero_with_help_and_type() {
        let text = full().encode();
        for series in [
            r#"wsproxy_connections_total{outcome="relayed"}"#,
            r#"wsproxy_connections_total{outcome="refused",reason="unknown_token"}"#,
            r#"wsproxy_connections_total{outcome="tls_failed"}"#,
            "wsproxy_connections_open",
            "wsproxy_sessions_open",
            r#"wsproxy_bytes_total{direction="to_target"}"#,
            r#"wsproxy_bytes_total{direction="to_client"}"#,
            "wsproxy_session_duration_seconds_count",
            r#"wsproxy_handshake_duration_seconds_bucket{le="+Inf"}"#,
            r#"wsproxy_token_lookups_total{result="timeout"}"#,
            "wsproxy_wrapped_starts_total",
            r#"wsproxy_wrapped_exits_total{status="no_bind"}"#,
            r#"wsproxy_ondemand_sessions{service="serial",state="lingering"}"#,
            r#"wsproxy_ondemand_sessions_ended_total{service="desktop",state="expired"}"#,
            r#"wsproxy_ondemand_launch_duration_seconds_count{service="desktop"}"#,
            r#"wsproxy_ondemand_rejections_total{reason="per_user_limit"}"#,
        ] {
            assert_eq!(sample(&text, series), 0.0, "{series}");
        }
        assert_eq!(
            sample(
                &text,
                &format!(r#"wsproxy_build_info{{version="{}"}}"#, env!("CARGO_PKG_VERSION"))
            ),
            1.0
        );
        let families: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        let helps = text.lines().filter(|l| l.starts_with("# HELP wsproxy_")).count();
        assert_eq!(families.len(), 14, "{families:?}");
        assert_eq!(helps, families.len());
        assert!(families.contains(&"wsproxy_connections_total counter"));
        assert!(families.contains(&"wsproxy_session_duration_seconds histogram"));
        assert!(families.contains(&"wsproxy_ondemand_sessions gauge"));
    }

    #[test]
    fn parts_a_run_lacks_are_left_out() {
        let text = Metrics::new(&Scope::default()).encode();
        assert!(text.contains("wsproxy_connections_total"));
        assert!(!text.contains("wrapped"), "{text}");
        assert!(!text.contains("ondemand"), "{text}");
    }

    #[test]
    fn connections_count_once_when_they_end() {
        let metrics = full();
        {
            let mut tally = Tally::new(Some(&metrics));
            assert_eq!(sample(&metrics.encode(), "wsproxy_connections_open"), 1.0);
            tally.upgraded();
            tally.outcome = Outcome::Relayed;
            metrics.session_ended(100, 2000, Duration::from_secs(3));
        }
        {
            let mut tally = Tally::new(Some(&metrics));
            tally.outcome = Outcome::Refused(Refusal::of(StatusCode::TOO_MANY_REQUESTS));
        }
        drop(Tally::new(Some(&metrics)));
        drop(Tally::new(None));
        let text = metrics.encode();
        assert_eq!(sample(&text, "wsproxy_connections_open"), 0.0);
        assert_eq!(sample(&text, r#"wsproxy_connections_total{outcome="relayed"}"#), 1.0);
        assert_eq!(
            sample(
                &text,
                r#"wsproxy_connections_total{outcome="refused",reason="throttled"}"#
            ),
            1.0
        );
        assert_eq!(
            sample(&text, r#"wsproxy_connections_total{outcome="handshake_failed"}"#),
            1.0
        );
        assert_eq!(sample(&text, r#"wsproxy_bytes_total{direction="to_target"}"#), 100.0);
        assert_eq!(sample(&text, r#"wsproxy_bytes_total{direction="to_client"}"#), 2000.0);
        assert_eq!(sample(&text, "wsproxy_handshake_duration_seconds_count"), 1.0);
        assert_eq!(sample(&text, r#"wsproxy_session_duration_seconds_bucket{le="1"}"#), 0.0);
        assert_eq!(
            sample(&text, r#"wsproxy_session_duration_seconds_bucket{le="10"}"#),
            1.0
        );
        assert_eq!(sample(&text, "wsproxy_session_duration_seconds_sum"), 3.0);
    }

    #[test]
    fn on_demand_sessions_move_between_states() {
        let metrics = full();
        let series = |state: &str| format!(r#"wsproxy_ondemand_sessions{{service="serial",state="{state}"}}"#);
        metrics.ondemand_moved("serial", None, State::Reserved);
        metrics.ondemand_moved("serial", Some(State::Reserved), State::Starting);
        metrics.ondemand_moved("serial", Some(State::Starting), State::Starting);
        metrics.ondemand_launched("serial", Duration::from_millis(300));
        metrics.ondemand_moved("serial", Some(State::Starting), State::Running);
        metrics.ondemand_moved("serial", None, State::Reserved);
        let text = metrics.encode();
        assert_eq!(sample(&text, &series("reserved")), 1.0);
        assert_eq!(sample(&text, &series("starting")), 0.0);
        assert_eq!(sample(&text, &series("running")), 1.0);
        assert_eq!(
            sample(
                &text,
                r#"wsproxy_ondemand_launch_duration_seconds_bucket{service="serial",le="0.5"}"#
            ),
            1.0
        );
        metrics.ondemand_moved("serial", Some(State::Running), State::Stopped);
        metrics.ondemand_moved("serial", Some(State::Reserved), State::Expired);
        metrics.ondemand_moved("nope", None, State::Reserved);
        metrics.ondemand_rejected(&Reservation::Limit(ReserveError::Full { count: 2 }));
        let text = metrics.encode();
        assert_eq!(sample(&text, &series("reserved")), 0.0);
        assert_eq!(sample(&text, &series("running")), 0.0);
        assert_eq!(
            sample(
                &text,
                r#"wsproxy_ondemand_sessions_ended_total{service="serial",state="stopped"}"#
            ),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                r#"wsproxy_ondemand_sessions_ended_total{service="serial",state="expired"}"#
            ),
            1.0
        );
        assert_eq!(
            sample(&text, r#"wsproxy_ondemand_rejections_total{reason="full"}"#),
            1.0
        );
        assert_eq!(
            sample(
                &text,
                r#"wsproxy_ondemand_sessions{service="desktop",state="reserved"}"#
            ),
            0.0
        );
    }

    #[test]
    fn wrapped_exits_by_status() {
        let metrics = full();
        metrics.wrapped_started();
        metrics.wrapped_exited(Some(ExitStatus::from_raw(0)));
        metrics.wrapped_exited(Some(ExitStatus::from_raw(3 << 8)));
        metrics.wrapped_exited(Some(ExitStatus::from_raw(9)));
        metrics.wrapped_exited(None);
        let text = metrics.encode();
        assert_eq!(sample(&text, "wsproxy_wrapped_starts_total"), 1.0);
        for status in ["success", "failure", "signal", "no_bind"] {
            assert_eq!(
                sample(&text, &format!(r#"wsproxy_wrapped_exits_total{{status="{status}"}}"#)),
                1.0,
                "{status}"
            );
        }
    }

    #[test]
    fn the_answer_is_the_text_format() {
        let metrics = full();
        metrics.token_lookup(LookupResult::Unknown);
        let response = metrics.respond(&Method::GET);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(
            sample(&metrics.encode(), r#"wsproxy_token_lookups_total{result="unknown"}"#),
            1.0
        );
        let response = metrics.respond(&Method::POST);
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "GET, HEAD");
    }
}
