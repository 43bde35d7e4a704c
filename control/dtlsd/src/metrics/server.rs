//! The HTTP side of the endpoint: hyper's HTTP/1.1 server on a current-thread tokio runtime,
//! one task per connection, under the limits of [`super`].

use std::convert::Infallible;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::exposition::{self, CONTENT_TYPE as METRICS_CONTENT_TYPE};
use super::health::Health;
use super::{
    ACCEPT_BACKOFF, CONNECTION_DEADLINE, HEADER_TIMEOUT, MAX_CONNECTIONS, MAX_REQUEST, STOP_POLL,
    Sources,
};

/// What every connection task answers from.
#[derive(Debug)]
pub(super) struct App {
    sources: Sources,
    registry: Registry,
}

impl App {
    pub(super) fn new(sources: Sources) -> Self {
        Self {
            registry: exposition::registry(sources.clone()),
            sources,
        }
    }
}

/// Accepts connections on `listener` until `stop` is set; each runs on its own task.
pub(super) async fn serve(listener: std::net::TcpListener, app: Arc<App>, stop: Arc<AtomicBool>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "metrics listener unusable; not serving metrics");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut spare = Spare::open();
    let mut tick = tokio::time::interval(STOP_POLL);
    loop {
        tokio::select! {
            // The stop flag first: a flood of connections must not delay shutdown.
            biased;
            _ = tick.tick() => {
                if stop.load(Relaxed) {
                    return;
                }
                spare.refill();
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match Arc::clone(&permits).try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(connection(stream, Arc::clone(&app), permit));
                    }
                    Err(_) => refuse_busy(&stream),
                },
                Err(e) if dtls_shard::is_out_of_descriptors(&e) => {
                    // The process is at its descriptor limit (sessions hold the rest): give
                    // back the spare so that this scrape can be accepted, or wait.
                    if !spare.release() {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
}

/// One connection: one request (no keep-alive), its head read within [`HEADER_TIMEOUT`],
/// the whole exchange within [`CONNECTION_DEADLINE`]; the permit is held until it closes.
async fn connection(stream: TcpStream, app: Arc<App>, _permit: OwnedSemaphorePermit) {
    let service = service_fn(move |request: Request<Incoming>| {
        let response = respond(request.method(), request.uri().path(), &app, Instant::now());
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(MAX_REQUEST)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics connection failed"),
        Err(_) => tracing::debug!("metrics connection closed at its deadline"),
    }
}

/// At the connection cap: a best-effort 503 without reading the request, then close.
fn refuse_busy(stream: &TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\
                          Connection: close\r\n\r\n";
    let _ = stream.try_write(BUSY);
    tracing::debug!("metrics connection refused: {MAX_CONNECTIONS} connections open");
}

/// The response to `method` on `path` at `now`.
pub(super) fn respond(
    method: &Method,
    path: &str,
    app: &App,
    now: Instant,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => match exposition::encode_registry(&app.registry) {
            Ok(text) => body(StatusCode::OK, METRICS_CONTENT_TYPE, text),
            Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
        },
        "/healthz" => {
            let health = Health::read(&app.sources, now);
            let status = if health.is_ok() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            body(status, "application/json", health.to_json())
        }
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    body(status, "text/plain; charset=utf-8", text)
}

fn body(
    status: StatusCode,
    content_type: &'static str,
    text: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(text.into()));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// One descriptor held back for the endpoint. When every other descriptor of the process is
/// taken (sessions' upstream sockets at `RLIMIT_NOFILE`), `accept` fails with EMFILE;
/// closing the spare lets that one scrape in, so the refusal counters stay readable exactly
/// when they matter. Taken back once a descriptor is free again.
#[derive(Debug)]
struct Spare(Option<File>);

impl Spare {
    fn open() -> Self {
        Self(File::open("/dev/null").ok())
    }

    /// Closes the spare; false when there was none.
    fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Takes a descriptor back when there is none held and one is free.
    fn refill(&mut self) {
        if self.0.is_none() {
            self.0 = File::open("/dev/null").ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dtls_io::IoCounters;
    use dtls_runtime::ControlCounters;
    use dtls_shard::{Progress, ShardCounters};
    use http_body_util::BodyExt;

    use super::super::ShardSource;
    use super::*;

    fn app(epoch: Instant, shards: usize) -> App {
        App::new(Sources {
            control: Arc::new(ControlCounters::default()),
            control_progress: Arc::new(Progress::new(epoch)),
            workers: Vec::new(),
            shards: (0..shards)
                .map(|_| ShardSource {
                    shard: Arc::new(ShardCounters::default()),
                    io: Arc::new(IoCounters::default()),
                    progress: Arc::new(Progress::new(epoch)),
                    snapshots: Arc::default(),
                    listen: std::net::SocketAddr::from(([127, 0, 0, 1], 4433)),
                })
                .collect(),
            certificates: Arc::default(),
            forwarding: None,
        })
    }

    fn text(r: Response<Full<Bytes>>) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let bytes = rt
            .block_on(r.into_body().collect())
            .expect("full body")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8 body")
    }

    #[test]
    fn routes_answer_by_path_and_method() {
        let epoch = Instant::now();
        let app = app(epoch, 1);
        let status = |method: Method, path: &str| respond(&method, path, &app, epoch).status();
        assert_eq!(status(Method::GET, "/healthz"), StatusCode::OK);
        assert_eq!(status(Method::HEAD, "/healthz"), StatusCode::OK);
        assert_eq!(status(Method::GET, "/metrics"), StatusCode::OK);
        assert_eq!(status(Method::GET, "/nope"), StatusCode::NOT_FOUND);
        let post = respond(&Method::POST, "/metrics", &app, epoch);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");

        let metrics = respond(&Method::GET, "/metrics", &app, epoch);
        assert_eq!(metrics.headers()[CONTENT_TYPE], METRICS_CONTENT_TYPE);
        let body = text(metrics);
        assert!(body.contains("dtlsd_shards 1\n"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");
    }

    #[test]
    fn healthz_is_503_when_a_stamp_is_stale() {
        let epoch = Instant::now();
        let app = app(epoch, 2);
        let now = epoch + Duration::from_secs(30);
        app.sources.control_progress.mark(now);
        app.sources.shards[0].progress.mark(now);
        // Shard 1 last turned 20 s ago.
        app.sources.shards[1]
            .progress
            .mark(now - Duration::from_secs(20));
        let r = respond(&Method::GET, "/healthz", &app, now);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let json: serde_json::Value = serde_json::from_str(&text(r)).expect("JSON body");
        assert_eq!(json["status"], "stalled");
        assert_eq!(json["shards"][1]["last_progress_ms"], 20_000);

        app.sources.shards[1].progress.mark(now);
        let r = respond(&Method::GET, "/healthz", &app, now);
        assert_eq!(r.status(), StatusCode::OK);
    }
}
