//! The dashboard: `GET /` and `/ui` serve one page (HTML, CSS and JS embedded in the binary),
//! `GET /ui/state` its state document as JSON, and `GET /ui/events` the same document as
//! Server-Sent Events, pushed within `POLL` of a change.
//!
//! One publisher task, shared by every SSE client, builds the document from the Supervisor's
//! snapshot every `POLL` and publishes it on a `watch` channel when it changed; it runs only while
//! somebody listens, and at most `MAX_SSE_CLIENTS` listen at once (503 past that). The page is
//! read-only: it needs no key, even when the API has one.

pub mod doc;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use serde_json::Value;
use tokio::sync::watch;

use super::ApiContext;
use super::error::{ApiError, ApiResult};
use super::types::rfc3339;

/// How often the publisher looks at the Supervisor while clients listen.
pub const POLL: Duration = Duration::from_millis(250);

/// SSE clients served at once; more are refused with 503.
pub const MAX_SSE_CLIENTS: usize = 32;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");

/// The publisher shared by all SSE clients of one router.
pub struct Hub {
    ctx: ApiContext,
    /// The latest document as SSE data (empty until the first one is built).
    tx: watch::Sender<Arc<String>>,
    /// Whether the publisher task runs; taken with the subscription so none is missed.
    running: Mutex<bool>,
    clients: AtomicUsize,
}

impl Hub {
    pub fn new(ctx: ApiContext) -> Arc<Hub> {
        Arc::new(Hub {
            ctx,
            tx: watch::channel(Arc::new(String::new())).0,
            running: Mutex::new(false),
            clients: AtomicUsize::new(0),
        })
    }

    /// A receiver of the documents; starts the publisher if it is not running.
    fn subscribe(self: &Arc<Hub>) -> watch::Receiver<Arc<String>> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let rx = self.tx.subscribe();
        if !*running {
            *running = true;
            tokio::spawn(publish(self.clone()));
        }
        rx
    }
}

/// Builds the document every `POLL` and sends it when it changed; stops when nobody listens.
async fn publish(hub: Arc<Hub>) {
    let mut since = doc::Since::default();
    let mut last: Option<Value> = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        {
            let mut running = hub.running.lock().unwrap_or_else(|e| e.into_inner());
            if hub.tx.receiver_count() == 0 {
                *running = false;
                return;
            }
        }
        let doc = match doc::build(&hub.ctx, &mut since).await {
            Ok(d) => d,
            Err(e) => serde_json::json!({ "unavailable": format!("{e:?}") }),
        };
        if last.as_ref() == Some(&doc) {
            continue;
        }
        let mut sent = doc.clone();
        sent["generated_at"] = Value::String(rfc3339(SystemTime::now()));
        hub.tx.send_replace(Arc::new(sent.to_string()));
        last = Some(doc);
    }
}

/// Counts an SSE client while its stream lives.
struct ClientGuard(Arc<Hub>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The dashboard's routes.
pub fn router(ctx: ApiContext) -> Router {
    let hub = Hub::new(ctx);
    Router::new()
        .route("/", get(index))
        .route("/ui", get(index))
        .route("/ui/app.css", get(css))
        .route("/ui/app.js", get(js))
        .route("/ui/state", get(state))
        .route("/ui/events", get(events))
        .with_state(hub)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /ui/state`: the document the page shows, built now.
async fn state(State(hub): State<Arc<Hub>>) -> ApiResult<Json<Value>> {
    let mut since = doc::Since::default();
    let mut d = doc::build(&hub.ctx, &mut since).await?;
    d["generated_at"] = Value::String(rfc3339(SystemTime::now()));
    Ok(Json(d))
}

/// `GET /ui/events`: `event: state` with the whole document at once and after every change.
async fn events(
    State(hub): State<Arc<Hub>>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    if hub.clients.fetch_add(1, Ordering::SeqCst) >= MAX_SSE_CLIENTS {
        hub.clients.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::Unavailable(format!(
            "{MAX_SSE_CLIENTS} dashboard clients already listen; try again later"
        )));
    }
    let guard = ClientGuard(hub.clone());
    let rx = hub.subscribe();
    // The current document at once (when there is one), then each new one.
    let stream =
        futures_util::stream::unfold((rx, guard, true), |(mut rx, guard, first)| async move {
            let mut wait = !first;
            loop {
                if wait {
                    rx.changed().await.ok()?;
                }
                wait = true;
                let doc = rx.borrow_and_update().clone();
                if !doc.is_empty() {
                    let event = Event::default().event("state").data(doc.as_str());
                    return Some((Ok(event), (rx, guard, false)));
                }
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
