//! `gitops webhook`: an HTTP endpoint for forge push webhooks that starts a sync, authenticated,
//! rate-limited and bounded, socket-activated by systemd or listening on `--listen`.
//!
//! The shape of one request: accept (bounded) → read head (deadline) → route → rate limit →
//! read body (size cap, deadline) → authenticate → parse → classify → trigger (coalesced) → answer.

pub(crate) mod auth;
pub(crate) mod event;
pub(crate) mod http;
pub(crate) mod limit;
mod trigger;

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

use self::auth::Secret;
use self::event::Verdict;
use self::http::{Head, ReadError, Response};
use self::limit::{RateLimiter, Scope};
use self::trigger::{Queued, Trigger};
use crate::cli::WebhookArgs;
use crate::outcome::Failure;
use crate::parse::{parse_duration, parse_size};

/// Idle timeout of a socket-activated server: systemd starts it again on the next connection.
/// At least a minute, so that every rate-limit bucket is full again when the state is dropped.
const SOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the accept loop wakes up to check the idle timeout.
const TICK: Duration = Duration::from_millis(250);

/// Validated settings of `gitops webhook`.
#[derive(Debug)]
pub struct WebhookSettings {
    /// `--listen` address, or None for the socket systemd passes.
    pub listen: Option<SocketAddr>,
    /// The shared secret.
    pub secret: Secret,
    /// Branch whose pushes trigger; None: the default branch named in the payload.
    pub branch: Option<String>,
    /// Shell command that starts a sync.
    pub trigger_command: String,
    /// Exit after this long idle; None: never.
    pub idle_timeout: Option<Duration>,
    /// Deadline for the request head, and again for the body.
    pub read_timeout: Duration,
    /// Body size cap in bytes.
    pub max_body_size: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Requests per minute per source.
    pub rate_limit_per_source: u32,
    /// Requests per minute overall.
    pub rate_limit_total: u32,
}

impl WebhookSettings {
    /// Validate flags; `socket_activated` decides the default idle timeout.
    pub fn from_args(
        args: WebhookArgs,
        socket_activated: bool,
        credentials_dir: Option<PathBuf>,
    ) -> anyhow::Result<WebhookSettings> {
        let listen = match &args.listen {
            Some(text) => Some(
                text.to_socket_addrs()
                    .ok()
                    .and_then(|mut addrs| addrs.next())
                    .ok_or_else(|| anyhow!("--listen {text:?} is not ADDR:PORT; use e.g. 127.0.0.1:9419"))?,
            ),
            None => None,
        };
        match (socket_activated, listen) {
            (true, Some(_)) => bail!(
                "--listen is set but systemd also passed a socket (LISTEN_FDS); drop --listen (GITOPS_WEBHOOK_LISTEN) from the service's configuration, or start it without the .socket unit"
            ),
            (false, None) => bail!(
                "no socket to serve: pass --listen ADDR:PORT (e.g. 127.0.0.1:9419), or start it through gitops-webhook.socket"
            ),
            _ => {}
        }
        if let Some(branch) = &args.branch {
            gix::validate::reference::name_partial(branch.as_str().into())
                .map_err(|e| anyhow!("--branch {branch:?} is not a valid branch name ({e}); pass a name like main"))?;
        }
        if args.trigger_command.trim().is_empty() {
            bail!(
                "--trigger-command is empty; give the command that starts a sync, e.g. 'systemctl start gitops.service'"
            );
        }
        let idle_timeout = match &args.idle_timeout {
            Some(text) => {
                Some(parse_duration(text).map_err(|e| anyhow!("--idle-timeout {text:?}: {e}; use e.g. 60s or 10m"))?)
            }
            None if socket_activated => Some(SOCKET_IDLE_TIMEOUT),
            None => None,
        };
        let read_timeout = parse_duration(&args.read_timeout)
            .map_err(|e| anyhow!("--read-timeout {:?}: {e}; use e.g. 10s", args.read_timeout))?;
        let max_body_size = parse_size(&args.max_body_size)
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| anyhow!("--max-body-size {:?} is not a size; use e.g. 1M or 512K", args.max_body_size))?;
        if args.max_connections == 0 {
            bail!("--max-connections 0 serves nobody; use 1 or more (default 16)");
        }
        if args.rate_limit_per_source == 0 || args.rate_limit_total == 0 {
            bail!("--rate-limit-per-source and --rate-limit-total must be 1 or more requests per minute");
        }
        let secret = auth::load_secret(args.secret_file.as_deref(), credentials_dir.as_deref())?;
        Ok(WebhookSettings {
            listen,
            secret,
            branch: args.branch,
            trigger_command: args.trigger_command,
            idle_timeout,
            read_timeout,
            max_body_size,
            max_connections: args.max_connections,
            rate_limit_per_source: args.rate_limit_per_source,
            rate_limit_total: args.rate_limit_total,
        })
    }
}

/// Run `gitops webhook` until the idle timeout (exit 0); configuration errors are exit 2.
pub fn run(args: WebhookArgs) -> Result<(), Failure> {
    // First, while there is a single thread: listenfd removes LISTEN_* from the environment.
    let inherited = inherited_listener().map_err(Failure::usage)?;
    let credentials_dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let settings = WebhookSettings::from_args(args, inherited.is_some(), credentials_dir).map_err(Failure::usage)?;
    let (listener, how) = match (inherited, settings.listen) {
        (Some(listener), _) => (listener, "socket from systemd"),
        (None, Some(addr)) => (
            TcpListener::bind(addr).with_context(|| {
                format!("--listen {addr}: cannot listen there; pick a free port or an address of this host")
            })?,
            "--listen",
        ),
        // from_args already refused this; kept as an error rather than a panic.
        (None, None) => return Err(Failure::usage(anyhow!("no socket to serve: pass --listen ADDR:PORT"))),
    };
    serve(listener, how, settings).map_err(Failure::from)
}

/// The listening socket systemd passed (LISTEN_FDS), if any.
fn inherited_listener() -> anyhow::Result<Option<TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    match fds.len() {
        0 => Ok(None),
        1 => fds.take_tcp_listener(0).context(
            "the socket systemd passed (LISTEN_FDS) is not a TCP listener; use ListenStream=ADDR:PORT in gitops-webhook.socket",
        ),
        n => bail!(
            "systemd passed {n} sockets (LISTEN_FDS={n}); gitops-webhook.socket must have exactly one ListenStream="
        ),
    }
}

/// Shared by all connection threads.
struct Shared {
    settings: WebhookSettings,
    limiter: Mutex<RateLimiter>,
    trigger: Arc<Trigger>,
}

/// Decrements the connection count however a connection thread ends.
struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve(listener: TcpListener, how: &str, settings: WebhookSettings) -> anyhow::Result<()> {
    let local = listener.local_addr().context("reading the listening socket's address")?;
    // Non-blocking, so that the loop below can wake up for the idle timeout.
    listener.set_nonblocking(true).context("making the listening socket non-blocking")?;
    let trigger = Trigger::spawn(settings.trigger_command.clone()).context("starting the trigger thread")?;
    log::info!(
        "listening on {local} ({how}); pushes to {} trigger {:?}; idle timeout {}",
        settings.branch.as_deref().unwrap_or("the default branch"),
        settings.trigger_command,
        settings.idle_timeout.map_or("none".to_string(), |d| format!("{d:?}")),
    );
    let ctx = Arc::new(Shared {
        limiter: Mutex::new(RateLimiter::new(
            settings.rate_limit_per_source,
            settings.rate_limit_total,
            Instant::now(),
        )),
        trigger,
        settings,
    });
    let active = Arc::new(AtomicUsize::new(0));
    let mut last_activity = Instant::now();
    let mut refusals = Refusals::default();
    loop {
        if wait_readable(&listener, TICK) {
            loop {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        last_activity = Instant::now();
                        accept(stream, peer, &ctx, &active, &mut refusals);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    // ECONNABORTED, EMFILE and friends concern one connection or pass; keep serving.
                    Err(e) => {
                        log::warn!("accepting a connection: {e}");
                        thread::sleep(Duration::from_millis(50));
                        break;
                    }
                }
            }
        }
        if let Some(idle) = ctx.settings.idle_timeout
            && last_activity.elapsed() >= idle
            && active.load(Ordering::SeqCst) == 0
            && !ctx.trigger.is_busy()
        {
            log::info!("no request for {idle:?}; exiting (systemd starts it again on the next connection)");
            return Ok(());
        }
    }
}

/// poll(2) the listener: true when a connection is waiting.
fn wait_readable(listener: &TcpListener, timeout: Duration) -> bool {
    let mut fd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, owned by this frame, for the duration of the call.
    let ready = unsafe { libc::poll(&mut fd, 1, millis) };
    ready > 0 && fd.revents & libc::POLLIN != 0
}

/// Hand a connection to its own thread, or refuse it when the bound is reached.
fn accept(stream: TcpStream, peer: SocketAddr, ctx: &Arc<Shared>, active: &Arc<AtomicUsize>, refusals: &mut Refusals) {
    // Accepted sockets must block (with deadlines) whatever the listener's mode.
    if let Err(e) = stream.set_nonblocking(false) {
        log::warn!("{peer}: cannot configure the connection: {e}");
        return;
    }
    if active.fetch_add(1, Ordering::SeqCst) >= ctx.settings.max_connections {
        active.fetch_sub(1, Ordering::SeqCst);
        refusals.count(peer, ctx.settings.max_connections);
        // Best effort and never blocking the accept loop: the client may not be reading.
        let body = "{\"error\":\"too many connections\"}";
        let refusal = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: 10\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.set_nonblocking(true);
        // Discard what already arrived (a close with unread input resets the connection,
        // and the client could lose the answer), but only a little: this is the accept loop.
        let mut sink = [0u8; 4096];
        for _ in 0..4 {
            if !matches!((&stream).read(&mut sink), Ok(n) if n > 0) {
                break;
            }
        }
        let _ = (&stream).write(refusal.as_bytes());
        let _ = stream.shutdown(Shutdown::Write);
        return;
    }
    let slot = ConnectionSlot(Arc::clone(active));
    let ctx = Arc::clone(ctx);
    let spawned = thread::Builder::new().name("connection".into()).spawn(move || {
        let _slot = slot;
        handle(stream, peer, &ctx);
    });
    if let Err(e) = spawned {
        log::error!("{peer}: cannot start a thread for the connection: {e}; dropped it");
    }
}

/// Connections refused at the bound, logged at most every REFUSAL_LOG_EVERY so a flood cannot flood the journal.
#[derive(Default)]
struct Refusals {
    unlogged: u64,
    logged_at: Option<Instant>,
}

const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

impl Refusals {
    fn count(&mut self, peer: SocketAddr, bound: usize) {
        self.unlogged += 1;
        if self.logged_at.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_EVERY) {
            log::warn!(
                "refused {} connection(s) (latest from {peer}): {bound} already open (--max-connections)",
                self.unlogged
            );
            self.unlogged = 0;
            self.logged_at = Some(Instant::now());
        }
    }
}

/// Serve one connection: one request, one answer, one log line.
fn handle(mut stream: TcpStream, peer: SocketAddr, ctx: &Shared) {
    let head = match http::read_head(&mut stream, ctx.settings.read_timeout) {
        Ok(head) => head,
        Err(ReadError::Dropped(why)) => {
            log::info!("{peer}: dropped: {why}");
            return;
        }
        Err(ReadError::Reject(response)) => {
            log::info!("{peer}: {}", response.summary());
            response.send(stream, false);
            return;
        }
    };
    let request_line = format!("{} {}", head.method, head.path);
    let forwarded = head.header("x-forwarded-for").map(|v| format!(" (X-Forwarded-For {v:?})")).unwrap_or_default();
    let head_only = head.method == "HEAD";
    let (response, detail) = match respond(&mut stream, peer.ip(), head, ctx) {
        Ok(answer) => answer,
        Err(ReadError::Dropped(why)) => {
            log::info!("{peer}{forwarded}: {request_line}: dropped: {why}");
            return;
        }
        Err(ReadError::Reject(response)) => (response, String::new()),
    };
    // Branch names and reasons come from the payload: no control character reaches the log.
    let line: String = format!("{peer}{forwarded}: {request_line}: {}{detail}", response.summary())
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    match response.status {
        401 => log::warn!("{line}"),
        200 if request_line.ends_with("/healthz") => log::debug!("{line}"),
        _ => log::info!("{line}"),
    }
    response.send(stream, head_only);
}

/// Route, limit, read, authenticate and act on one request; the String adds detail to the log line.
fn respond(stream: &mut TcpStream, source: IpAddr, head: Head, ctx: &Shared) -> Result<(Response, String), ReadError> {
    let allow = match head.path.as_str() {
        "/healthz" => "GET, HEAD",
        "/hooks/push" => "POST",
        _ => {
            return Ok((Response::error(404, "not found; forges post to /hooks/push"), String::new()));
        }
    };
    if !allow.split(", ").any(|m| m == head.method) {
        let response = Response::error(405, format!("method {} not allowed", head.method)).with_header("Allow", allow);
        return Ok((response, String::new()));
    }
    // Before reading the body or computing an HMAC: a flood costs as little as possible.
    let limited = ctx.limiter.lock().unwrap_or_else(PoisonError::into_inner).check(source, Instant::now());
    if let Err(limited) = limited {
        let scope = match limited.scope {
            Scope::Source => "from this address (--rate-limit-per-source)",
            Scope::Total => "overall (--rate-limit-total)",
        };
        let retry = limited.retry_after.as_secs().max(1);
        let response =
            Response::error(429, format!("too many requests {scope}")).with_header("Retry-After", retry.to_string());
        return Ok((response, String::new()));
    }
    if head.path == "/healthz" {
        return Ok((Response::json(200, json!({ "status": "ok" })), String::new()));
    }
    push(stream, head, ctx)
}

/// `POST /hooks/push`.
fn push(stream: &mut TcpStream, head: Head, ctx: &Shared) -> Result<(Response, String), ReadError> {
    let (forge, event) = event::event_of(|name| head.header(name));
    let event = event.to_string();
    let content_type =
        head.header("content-type").map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    let headers = head.headers.clone();
    let body = http::read_body(stream, head, ctx.settings.max_body_size, ctx.settings.read_timeout)?;
    // Nothing from an unauthenticated request is looked at beyond its headers.
    let proved_by = match auth::authenticate(&ctx.settings.secret, &headers, &body) {
        Ok(header) => header,
        Err(e) => {
            return Ok((Response::error(401, e.to_string()), String::new()));
        }
    };
    if content_type.as_deref() == Some("application/x-www-form-urlencoded") {
        return Ok((
            Response::error(
                415,
                "form-encoded payloads are not supported; set the webhook's content type to application/json",
            ),
            String::new(),
        ));
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(payload) => payload,
        Err(e) => {
            return Ok((Response::error(400, format!("body is not valid JSON: {e}")), String::new()));
        }
    };
    let verdict = match event::classify(forge, &event, &payload, ctx.settings.branch.as_deref()) {
        Ok(verdict) => verdict,
        Err(why) => return Ok((Response::error(400, why), String::new())),
    };
    let via = format!(" ({} {event:?}, {proved_by})", forge.name());
    let answer = match verdict {
        Verdict::Ping => (Response::json(200, json!({ "result": "pong" })), via),
        Verdict::Ignored(reason) => {
            (Response::json(202, json!({ "result": "ignored", "reason": reason })), format!("{via}: {reason}"))
        }
        Verdict::Push { branch, commit } => {
            let queued = ctx.trigger.request();
            let (result, what) = match queued {
                Queued::Started => ("triggered", "sync started"),
                Queued::FollowUp => ("queued", "a sync is running; one more follows it"),
            };
            let commit = commit.unwrap_or_default();
            let short = commit.get(..12).unwrap_or(&commit).to_string();
            (
                Response::json(202, json!({ "result": result, "branch": branch, "commit": commit })),
                format!("{via}: push to {branch} {short}: {what}"),
            )
        }
    };
    Ok(answer)
}
