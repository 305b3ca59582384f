//! Logs and traces: one tracing subscriber with a log layer (`pretty` or `json` lines on stdout,
//! filtered by `RUST_LOG`, default `info`) and, when an OTLP endpoint is configured, an
//! OpenTelemetry layer that exports acevisor's spans over OTLP (gRPC, or HTTP/protobuf).
//!
//! The standard OpenTelemetry variables win over the config file, as users expect:
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is), `OTEL_EXPORTER_OTLP_ENDPOINT` (HTTP gets
//! `/v1/traces` appended), `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`,
//! `OTEL_SERVICE_NAME`. [`otlp_target`] is that decision as a pure function.
//!
//! What reaches the exporter is decided here, not by `RUST_LOG`: only spans of acevisor itself,
//! and Docker call spans (`docker.*`) only inside another exported span. A quiet poll therefore
//! exports nothing; the span catalogue is in `docs/observability.md`.
//!
//! The returned [`Telemetry`] guard flushes and shuts the exporter down on the blocking pool
//! (the batch exporter blocks), so call [`Telemetry::shutdown`] before the runtime ends.

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::DynFilterFn;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::{Config, LogFormat, OtlpProtocol};

/// Timeout of one export request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how traces are exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpTarget {
    /// The full URL the exporter sends to (for HTTP, including `/v1/traces`).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
}

/// Decides the OTLP target from the config and the environment (`env` looks a variable up;
/// empty values count as unset). `Ok(None)`: no endpoint anywhere, nothing is exported.
/// `Err`: a protocol acevisor does not speak (`http/json`), named in the message.
pub fn otlp_target(
    otlp_endpoint: Option<&str>,
    otlp_protocol: Option<OtlpProtocol>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<OtlpTarget>, String> {
    let env = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let protocol = match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", v))
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL").map(|v| ("OTEL_EXPORTER_OTLP_PROTOCOL", v)))
    {
        Some((var, v)) => match v.as_str() {
            "grpc" => OtlpProtocol::Grpc,
            "http/protobuf" => OtlpProtocol::HttpProtobuf,
            other => {
                return Err(format!(
                    "{var}={other} is not supported: use grpc or http/protobuf"
                ));
            }
        },
        None => otlp_protocol.unwrap_or(OtlpProtocol::Grpc),
    };
    // A signal-specific endpoint is the full URL already (OpenTelemetry spec).
    if let Some(url) = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(Some(OtlpTarget {
            endpoint: url,
            protocol,
        }));
    }
    let base = env("OTEL_EXPORTER_OTLP_ENDPOINT").or_else(|| {
        otlp_endpoint
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
    });
    Ok(base.map(|base| OtlpTarget {
        endpoint: match protocol {
            OtlpProtocol::Grpc => base,
            OtlpProtocol::HttpProtobuf => traces_url(&base),
        },
        protocol,
    }))
}

/// `http://host:4318` -> `http://host:4318/v1/traces` (a URL already ending so is kept).
fn traces_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// Owns the trace exporter; flushes it on [`Telemetry::shutdown`].
#[must_use = "dropping the guard without shutdown() may lose the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    target: Option<OtlpTarget>,
}

impl Telemetry {
    /// Where traces go, if anywhere.
    pub fn target(&self) -> Option<&OtlpTarget> {
        self.target.as_ref()
    }

    /// Exports every finished span now (on the blocking pool: the exporter blocks).
    pub async fn flush(&self) {
        if let Some(p) = self.provider.clone() {
            let _ = tokio::task::spawn_blocking(move || p.force_flush()).await;
        }
    }

    /// Flushes and stops the exporter. Call once, after the actors stopped.
    pub async fn shutdown(mut self) {
        if let Some(p) = self.provider.take() {
            let result = tokio::task::spawn_blocking(move || {
                let _ = p.force_flush();
                p.shutdown()
            })
            .await;
            if let Ok(Err(e)) = result {
                eprintln!("acevisor: trace exporter shutdown: {e}");
            }
        }
    }
}

/// Builds the subscriber and the exporter without installing anything (tests install it with
/// `tracing::subscriber::set_default`). Needs a tokio runtime when the target is gRPC. Problems
/// with the exporter come back as messages to log once a subscriber is installed: they never
/// stop the daemon.
pub fn build(
    config: &Config,
    env: impl Fn(&str) -> Option<String>,
) -> (Box<dyn Subscriber + Send + Sync>, Telemetry, Vec<String>) {
    let mut problems = Vec::new();
    let tel = &config.telemetry;
    let target = match otlp_target(tel.otlp_endpoint.as_deref(), tel.otlp_protocol, &env) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("traces are not exported: {e}"));
            None
        }
    };
    let service_name = env("OTEL_SERVICE_NAME")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| tel.service_name.clone());
    let provider =
        target.as_ref().and_then(
            |t| match tracer_provider(t, &service_name, &config.instance) {
                Ok(p) => Some(p),
                Err(e) => {
                    problems.push(format!(
                        "traces are not exported: cannot set up the OTLP exporter for {}: {e}",
                        t.endpoint
                    ));
                    None
                }
            },
        );

    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    let logs = match tel.log_format {
        LogFormat::Json => fmt
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => fmt
            .with_ansi(std::io::stdout().is_terminal())
            .event_format(Line)
            .boxed(),
    }
    .with_filter(log_filter);
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("acevisor"))
            .with_level(true)
            .with_threads(false)
            .with_filter(export_filter())
    });
    let subscriber = Registry::default().with(logs).with(traces);
    (
        Box::new(subscriber),
        Telemetry {
            provider,
            target: if problems.is_empty() { target } else { None },
        },
        problems,
    )
}

/// Installs the global subscriber (logs, and traces when an endpoint is configured) and returns
/// the exporter's guard. Call inside the tokio runtime. A second call installs nothing.
pub fn init(config: &Config) -> Telemetry {
    let (subscriber, telemetry, problems) = build(config, |k| std::env::var(k).ok());
    if subscriber.try_init().is_ok() {
        for p in problems {
            tracing::warn!("{p}");
        }
        if let Some(t) = telemetry.target() {
            tracing::info!(endpoint = %t.endpoint, protocol = ?t.protocol, "exporting traces over OTLP");
        }
    }
    telemetry
}

fn tracer_provider(
    target: &OtlpTarget,
    service_name: &str,
    instance: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = match target.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(target.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()?,
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(target.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()?,
    };
    let resource = Resource::builder_empty()
        .with_service_name(service_name.to_string())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance.to_string()),
        ])
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The `pretty` line: `time LEVEL span>chain: message fields`. The chain names acevisor's spans
/// the line was logged in (innermost last), without repeating their fields: every decision logs
/// its own fields, the same as its span's attributes.
struct Line;

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        SystemTime.format_time(&mut writer)?;
        let level = *event.metadata().level();
        let (on, off) = match (writer.has_ansi_escapes(), level) {
            (false, _) => ("", ""),
            (true, tracing::Level::ERROR) => ("\x1b[31m", "\x1b[0m"),
            (true, tracing::Level::WARN) => ("\x1b[33m", "\x1b[0m"),
            (true, tracing::Level::INFO) => ("\x1b[32m", "\x1b[0m"),
            (true, _) => ("\x1b[2m", "\x1b[0m"),
        };
        write!(writer, " {on}{level:>5}{off} ")?;
        if let Some(scope) = ctx.event_scope() {
            let names: Vec<&str> = scope
                .from_root()
                .filter(|s| s.metadata().target().starts_with("acevisor"))
                .map(|s| s.name())
                .collect();
            if !names.is_empty() {
                write!(writer, "{}: ", names.join(">"))?;
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// What the OpenTelemetry layer sees: acevisor's own spans and events; a `docker.*` span only
/// inside another exported span, so the safety-net polls and the events subscription never
/// start traces of their own.
fn export_filter<S>() -> DynFilterFn<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    DynFilterFn::new(exported::<S>)
}

fn exported<S>(meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if !meta.target().starts_with("acevisor") || *meta.level() > tracing::Level::INFO {
        return false;
    }
    if meta.is_span() && meta.name().starts_with("docker.") {
        return cx.lookup_current().is_some();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn target(endpoint: &str, protocol: OtlpProtocol) -> Option<OtlpTarget> {
        Some(OtlpTarget {
            endpoint: endpoint.to_string(),
            protocol,
        })
    }

    #[test]
    fn nothing_configured_exports_nothing() {
        assert_eq!(otlp_target(None, None, env_of(&[])), Ok(None));
        assert_eq!(
            otlp_target(
                Some("  "),
                None,
                env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")])
            ),
            Ok(None)
        );
    }

    #[test]
    fn file_endpoint_defaults_to_grpc_as_given() {
        assert_eq!(
            otlp_target(Some("http://jaeger:4317"), None, env_of(&[])),
            Ok(target("http://jaeger:4317", OtlpProtocol::Grpc))
        );
    }

    #[test]
    fn http_gets_the_traces_path_appended_once() {
        let http = Some(OtlpProtocol::HttpProtobuf);
        assert_eq!(
            otlp_target(Some("http://jaeger:4318/"), http, env_of(&[])),
            Ok(target(
                "http://jaeger:4318/v1/traces",
                OtlpProtocol::HttpProtobuf
            ))
        );
        assert_eq!(
            otlp_target(Some("http://jaeger:4318/v1/traces"), http, env_of(&[])),
            Ok(target(
                "http://jaeger:4318/v1/traces",
                OtlpProtocol::HttpProtobuf
            ))
        );
    }

    #[test]
    fn environment_wins_over_the_file() {
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]);
        assert_eq!(
            otlp_target(Some("http://jaeger:4317"), Some(OtlpProtocol::Grpc), env),
            Ok(target(
                "http://collector:4318/v1/traces",
                OtlpProtocol::HttpProtobuf
            ))
        );
        // The env protocol alone switches a file endpoint to HTTP.
        let env = env_of(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]);
        assert_eq!(
            otlp_target(Some("http://jaeger:4318"), None, env),
            Ok(target(
                "http://jaeger:4318/v1/traces",
                OtlpProtocol::HttpProtobuf
            ))
        );
        // The env endpoint alone keeps the file's protocol.
        let env = env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]);
        assert_eq!(
            otlp_target(Some("http://jaeger:4318"), Some(OtlpProtocol::Grpc), env),
            Ok(target("http://collector:4317", OtlpProtocol::Grpc))
        );
    }

    #[test]
    fn signal_specific_variables_win_and_are_used_as_is() {
        let env = env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4318/custom"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ]);
        assert_eq!(
            otlp_target(None, None, env),
            Ok(target("http://b:4318/custom", OtlpProtocol::HttpProtobuf))
        );
    }

    #[test]
    fn unsupported_protocol_is_named() {
        let env = env_of(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
        let err = otlp_target(Some("http://x:4318"), None, env).unwrap_err();
        assert!(
            err.contains("OTEL_EXPORTER_OTLP_PROTOCOL=http/json"),
            "{err}"
        );
    }
}
