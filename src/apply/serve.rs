//! Serves the HTTP API within limits, so no client can starve the controller: a cap on open
//! connections (excess refused at accept), header-read and idle timeouts, and file descriptors
//! kept in reserve for the engines and the manifest directory.
//!
//! # Why
//! Issue 9: 20,000 idle connections (no token needed) took every file descriptor; `/healthz`
//! stopped answering, a killed container was not replaced and a directory rescan failed with
//! "Too many open files". Connections are the one resource any client can make the controller
//! hold, so they are capped below the descriptor limit and each is closed when it idles.
//!
//! # Caveats
//! A client refused at the cap gets a one-line 503 and a closed connection; while a flood lasts,
//! legitimate clients may be refused too, but the controller itself keeps reconciling.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::api::ApiLimits;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit in force, so a
/// busy controller does not run out of descriptors at the distribution's default of 1024.
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return None;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
        }
        #[allow(clippy::useless_conversion)] // rlim_t is u64 on Linux, not everywhere
        Some(u64::from(lim.rlim_cur))
    }
    #[cfg(not(unix))]
    None
}

/// The soft `RLIMIT_NOFILE` in force, without changing it.
pub fn fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        #[allow(clippy::useless_conversion)] // rlim_t is u64 on Linux, not everywhere
        Some(u64::from(lim.rlim_cur))
    }
    #[cfg(not(unix))]
    None
}

/// The connection cap in force: the configured one, at most half the descriptor limit (the
/// other half is the engines', the directory's and the status writer's).
pub fn connection_cap(configured: usize, fd_limit: Option<u64>) -> usize {
    let half = fd_limit
        .map(|l| usize::try_from(l / 2).unwrap_or(usize::MAX))
        .unwrap_or(usize::MAX);
    configured.min(half).max(1)
}

/// The limits [`serve`] applies to every connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl ConnLimits {
    /// The limits of `api`, the connection cap fitted to `fd_limit`.
    pub fn new(api: &ApiLimits, fd_limit: Option<u64>) -> ConnLimits {
        ConnLimits {
            max_connections: connection_cap(api.max_connections, fd_limit),
            header_read_timeout: api.header_read_timeout.0,
            idle_timeout: api.idle_timeout.0,
        }
    }
}

/// What a client refused at the cap reads before the connection closes.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: 72\r\n\r\n{\"error\":\"too many connections to the controller (api.maxConnections)\"}\n";

/// Refused connections that get a written 503 at the same time (each holds its descriptor for
/// at most [`REFUSAL_LINGER`]).
const REFUSING_AT_ONCE: usize = 16;
const REFUSAL_LINGER: Duration = Duration::from_millis(200);

async fn refuse(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(REFUSED).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

/// Serves `app` on `listener` until `shutdown` completes, within `limits`.
///
/// # Errors
/// None in practice: accept errors (out of descriptors, a reset connection) are logged and
/// retried after a short pause, never fatal.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with_tls(listener, app, limits, None, shutdown).await
}

/// [`serve`], speaking TLS on every connection when `tls` is given (the handshake bounded by
/// the header-read timeout).
///
/// # Errors
/// As [`serve`].
pub async fn serve_with_tls(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut refused = Refusals::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: the connection stays in the backlog; pause rather than
                // spin, the descriptors come back as connections close.
                warn!(error = %e, "cannot accept an API connection; pausing");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let (app, stop, tls) = (app.clone(), stop.clone(), tls.clone());
                // The permit travels with the connection's stream: an upgraded connection
                // (`ms exec -it`) outlives `serve_connection` and keeps its place under the cap.
                tracker.spawn(async move {
                    match tls {
                        None => serve_connection(stream, app, limits, stop, permit).await,
                        Some(acceptor) => {
                            let timeout = limits.header_read_timeout;
                            if let Some(s) = super::tls::handshake(&acceptor, stream, timeout).await
                            {
                                serve_connection(s, app, limits, stop, permit).await;
                            }
                        }
                    }
                });
            }
            Err(_) => {
                refused.note(limits.max_connections);
                // Refused at accept. A few refusals at a time get a readable 503 (written, then
                // the request drained briefly so closing does not reset it away); in a flood
                // the rest are closed at once, freeing the descriptor.
                match refusing.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(async move {
                            refuse(stream).await;
                            drop(permit);
                        });
                    }
                    Err(_) => drop(stream),
                }
            }
        }
    }
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        debug!("API connections still open at shutdown; closing them");
    }
    Ok(())
}

/// Counts refused connections and logs them at most every 10 s.
#[derive(Default)]
struct Refusals {
    count: u64,
    logged: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, cap: usize) {
        self.count += 1;
        if self
            .logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            warn!(
                refused = self.count,
                max_connections = cap,
                "API connection limit reached: refusing new connections (api.maxConnections)"
            );
            self.logged = Some(Instant::now());
            self.count = 0;
        }
    }
}

/// One connection: HTTP/1.1 with the header-read timeout, closed after `idle_timeout` without
/// traffic, shut down gracefully when `stop` is cancelled. An upgraded connection (an
/// interactive exec) leaves here with its `permit` and is its route's from then on: a person at
/// a shell may be silent longer than the idle timeout.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    app: Router,
    limits: ConnLimits,
    stop: CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
        _permit: permit,
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder
        .serve_connection(io, TowerToHyperService::new(app))
        .with_upgrades();
    tokio::pin!(conn);
    let check = (limits.idle_timeout / 4).max(Duration::from_millis(10));
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(error = %e, "API connection ended");
                }
                return;
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep(check) => {
                if activity.idle_for() >= limits.idle_timeout {
                    debug!("closing an idle API connection");
                    return;
                }
            }
        }
    }
}

/// When a connection last moved a byte.
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let since = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(since)
    }
}

/// A stream that records each read and write in its [`Activity`], and holds its connection's
/// place under the cap for as long as it lives.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Logs the limits in force once at start.
pub fn log_limits(limits: &ConnLimits, fd_limit: Option<u64>) {
    info!(
        max_connections = limits.max_connections,
        fd_limit = fd_limit.unwrap_or(0),
        header_read_timeout = ?limits.header_read_timeout,
        idle_timeout = ?limits.idle_timeout,
        "API limits"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::DurationSpec;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_cap_leaves_half_the_descriptors_to_the_rest_of_the_controller() {
        assert_eq!(connection_cap(512, Some(20000)), 512);
        assert_eq!(connection_cap(512, Some(256)), 128);
        assert_eq!(connection_cap(512, None), 512);
        assert_eq!(connection_cap(512, Some(1)), 1);
    }

    #[test]
    fn limits_are_validated_with_their_keys() {
        let mut a = ApiLimits::default();
        a.validate().unwrap();
        a.max_connections = 0;
        assert!(a.validate().unwrap_err().contains("api.maxConnections"));
        let a = ApiLimits {
            idle_timeout: DurationSpec::from_secs(0),
            ..ApiLimits::default()
        };
        assert!(a.validate().unwrap_err().contains("api.idleTimeout"));
    }

    async fn start(limits: ConnLimits) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, app, limits, async move {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    async fn get(addr: std::net::SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_refused_at_once_and_slots_come_back() {
        let limits = ConnLimits {
            max_connections: 4,
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(60),
        };
        let (addr, _stop) = start(limits).await;
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = get(addr).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.contains("api.maxConnections"), "{refused}");
        // The idle ones never sent headers: closed after the header-read timeout.
        for s in &mut idle {
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("closed by the header-read timeout");
            assert!(n.is_ok());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ok = get(addr).await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    }

    #[tokio::test]
    async fn a_connection_that_stops_talking_mid_request_is_closed() {
        let limits = ConnLimits {
            max_connections: 4,
            header_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_millis(200),
        };
        let (addr, _stop) = start(limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        // Headers complete, a body that never comes.
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "the stalled connection was not closed");
    }
}
