//! Real servers on 127.0.0.1 for integration tests: Git (git daemon, smart HTTP, sshd), TLS
//! (socat), a webhook receiver, a FleetLock server and a fault-injecting TCP proxy.
//! Each one is killed and reaped on Drop so a failing test never leaks a listener.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::tooling;

/// A free TCP port on 127.0.0.1 (bind :0, read, drop).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    l.local_addr().expect("local_addr of probe socket").port()
}

/// Wait until something accepts TCP connections on addr:port (poll every 20ms, panic after 10s with the given server's name).
pub fn wait_for_port(addr: &str, port: u16, what: &str) {
    wait_ready(None, addr, port, what);
}

/// Polls for the port; returns false if `child` exits first, so callers can retry a lost port race.
fn wait_ready(mut child: Option<&mut Child>, addr: &str, port: u16, what: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(c) = child.as_deref_mut()
            && c.try_wait().expect("try_wait on server child").is_some()
        {
            return false;
        }
        if TcpStream::connect((addr, port)).is_ok() {
            return true;
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}:{port} within 10s");
        thread::sleep(Duration::from_millis(20));
    }
}

/// First line of a helper command's stdout (`git --exec-path`, `id -un`).
fn stdout_of(prog: &str, arg: &str) -> String {
    let out = Command::new(prog).arg(arg).output().expect("run helper command");
    assert!(out.status.success(), "`{prog} {arg}` failed");
    String::from_utf8(out.stdout).expect("utf-8 output").trim().to_string()
}

/// A background accept loop on a bound listener, handing each connection to `handle`; stopped
/// and joined on Drop, so a finished test never leaves a listener behind.
struct Acceptor {
    port: u16,
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    fn start(listener: TcpListener, handle: impl Fn(TcpStream) + Send + 'static) -> Acceptor {
        let port = listener.local_addr().expect("local_addr of a bound listener").port();
        let shutdown = Arc::new(AtomicBool::new(false));
        let stop = shutdown.clone();
        let thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    handle(stream);
                }
            }
        });
        Acceptor { port, shutdown, thread: Some(thread) }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        // accept() has no timeout: a dummy connection is the portable way to wake it up.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `git daemon` serving every repo under `base_dir` (export-all) on a random 127.0.0.1 port.
pub struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    /// Starts the daemon, retrying with a new port if another process grabbed the probed one first.
    pub fn start(base_dir: &Path) -> GitDaemon {
        // Run git-daemon itself: `git daemon` forks it as a grandchild that kill() would orphan.
        let daemon = Path::new(&stdout_of("git", "--exec-path")).join("git-daemon");
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&daemon)
                .args(["--reuseaddr", "--export-all", "--enable=upload-pack"])
                .args(["--listen=127.0.0.1", "--informative-errors"])
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", base_dir.display()))
                .arg(base_dir)
                .stdin(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn git-daemon");
            let stderr = child.stderr.take().expect("git-daemon stderr is piped");
            // Our readiness probe connects and hangs up, which the daemon reports as fatal; hide
            // just that line. The thread inherits the test's output capture, so the rest stays visible.
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if !line.contains("the remote end hung up unexpectedly") {
                        eprintln!("git daemon: {line}");
                    }
                }
            });
            if wait_ready(Some(&mut child), "127.0.0.1", port, "git daemon") {
                return GitDaemon { child, port };
            }
        }
        panic!("git daemon exited early 5 times (port race or bad base dir {base_dir:?})");
    }

    /// URL of a repo relative to the base dir, e.g. "git://127.0.0.1:PORT/origin.git".
    pub fn url(&self, repo_rel: &str) -> String {
        let rel = repo_rel.trim_start_matches('/');
        format!("git://127.0.0.1:{}/{rel}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// `git http-backend` (smart HTTP, read-only upload-pack is enough) behind a tiny CGI-capable HTTP/1.1 server written here with std::net, running in background threads.
pub struct HttpGit {
    requests: Arc<AtomicUsize>,
    acceptor: Acceptor,
}

impl HttpGit {
    /// Serves every repo under `project_root`; binding :0 directly means there is no port race.
    pub fn start(project_root: &Path) -> HttpGit {
        HttpGit::serve(project_root, None)
    }

    /// Like `start`, but every request must carry HTTP Basic auth for `user`/`password` (401 otherwise).
    pub fn start_with_auth(project_root: &Path, user: &str, password: &str) -> HttpGit {
        let encoded = Command::new("sh")
            .args(["-c", "printf '%s' \"$1\" | base64 -w0", "sh", &format!("{user}:{password}")])
            .output()
            .expect("running base64");
        let expected = format!("Basic {}", String::from_utf8_lossy(&encoded.stdout).trim());
        HttpGit::serve(project_root, Some(expected))
    }

    fn serve(project_root: &Path, auth: Option<String>) -> HttpGit {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind HTTP git server");
        let requests = Arc::new(AtomicUsize::new(0));
        let reqs = requests.clone();
        let root = project_root.to_path_buf();
        let acceptor = Acceptor::start(listener, move |stream| {
            let (root, reqs, auth) = (root.clone(), reqs.clone(), auth.clone());
            thread::spawn(move || {
                if let Err(e) = serve_one(stream, &root, &reqs, auth.as_deref()) {
                    eprintln!("HttpGit: connection error: {e}");
                }
            });
        });
        HttpGit { requests, acceptor }
    }

    /// URL of a repo relative to the project root, e.g. "http://127.0.0.1:PORT/origin.git".
    pub fn url(&self, repo_rel: &str) -> String {
        let rel = repo_rel.trim_start_matches('/');
        format!("http://127.0.0.1:{}/{rel}", self.acceptor.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.acceptor.port
    }

    /// How many HTTP requests were served, so tests can prove traffic really went through here.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// An HTTP request line and headers (names lower-cased), read from a connection.
struct RequestHead {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl RequestHead {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Read the request line and headers; None when the client closed without sending anything.
fn read_head(reader: &mut impl BufRead) -> std::io::Result<Option<RequestHead>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None); // a Drop wake-up connection, or a client that gave up
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok(Some(RequestHead { method, target, headers }))
}

/// Read the body by Content-Length or chunked encoding, answering `Expect: 100-continue` first
/// (curl sends it for chunked POSTs and would otherwise stall ~1s).
fn read_body(reader: &mut impl BufRead, out: &mut impl Write, head: &RequestHead) -> std::io::Result<Vec<u8>> {
    if head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if head.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return read_chunked(reader);
    }
    let len: usize = head.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// Handles exactly one request and closes, which HTTP/1.1 allows via `Connection: close`.
fn serve_one(stream: TcpStream, root: &Path, requests: &AtomicUsize, auth: Option<&str>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let Some(head) = read_head(&mut reader)? else { return Ok(()) };
    let (path, query) = head.target.split_once('?').unwrap_or((&head.target, ""));
    let header = |name: &str| head.header(name);
    let method = head.method.clone();

    if let Some(expected) = auth
        && header("authorization") != Some(expected)
    {
        requests.fetch_add(1, Ordering::SeqCst);
        let body = b"authentication required\n";
        write!(
            out,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        out.write_all(body)?;
        return Ok(());
    }
    let body = read_body(&mut reader, &mut out, &head)?;
    requests.fetch_add(1, Ordering::SeqCst);

    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type").unwrap_or(""))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for (k, v) in &head.headers {
        // Git-Protocol -> HTTP_GIT_PROTOCOL is what turns on protocol v2.
        cmd.env(format!("HTTP_{}", k.to_ascii_uppercase().replace('-', "_")), v);
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("http-backend stdin is piped");
    // Feed stdin on another thread: upload-pack may start writing before it has read everything.
    let feeder = thread::spawn(move || stdin.write_all(&body));
    let output = child.wait_with_output()?;
    let _ = feeder.join();

    let raw = output.stdout;
    let (head, body) = match find(&raw, b"\r\n\r\n") {
        Some(i) => (&raw[..i], &raw[i + 4..]),
        None => match find(&raw, b"\n\n") {
            Some(i) => (&raw[..i], &raw[i + 2..]),
            None => (&b""[..], &raw[..]),
        },
    };
    let mut status = "200 OK".to_string();
    let mut resp_headers = String::new();
    for l in String::from_utf8_lossy(head).lines().filter(|l| !l.is_empty()) {
        match l.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_string(),
            _ => resp_headers.push_str(&format!("{l}\r\n")),
        }
    }
    let head =
        format!("HTTP/1.1 {status}\r\n{resp_headers}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()?;
    let _ = out.shutdown(Shutdown::Both);
    Ok(())
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size_hex = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|e| std::io::Error::other(format!("bad chunk size {line:?}: {e}")))?;
        if size == 0 {
            // Skip optional trailers up to the terminating blank line.
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        reader.read_line(&mut line)?; // CRLF after each chunk
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `sshd` with a generated ed25519 host key, a generated client (deploy) key authorised for the current user, listening on 127.0.0.1:random port.
pub struct Sshd {
    child: Child,
    dir: PathBuf,
    addr: String,
    port: u16,
    user: String,
}

impl Sshd {
    /// Starts on 127.0.0.1 with a random port; keys, config and log live in `dir`.
    /// None when the machine has no sshd: the test is skipped (see `tooling::available`).
    #[must_use]
    pub fn start(dir: &Path) -> Option<Sshd> {
        if !tooling::available(&[tooling::SSHD, tooling::SSH_KEYGEN]) {
            return None;
        }
        for _ in 0..5 {
            if let Some(s) = Sshd::try_start(dir, "127.0.0.1", free_port()) {
                return Some(s);
            }
        }
        panic!("sshd exited early 5 times; last log:\n{}", read_log(dir));
    }

    /// Fixed address/port, for scp-like URLs which cannot carry a port (so port 22 on a random 127.x.y.z).
    /// None (the test is skipped) without sshd, or without root for a port below 1024.
    #[must_use]
    pub fn start_on(dir: &Path, addr: &str, port: u16) -> Option<Sshd> {
        let needs: &[tooling::Need] = if port < 1024 {
            &[tooling::ROOT, tooling::SSHD, tooling::SSH_KEYGEN]
        } else {
            &[tooling::SSHD, tooling::SSH_KEYGEN]
        };
        if !tooling::available(needs) {
            return None;
        }
        let sshd = Sshd::try_start(dir, addr, port)
            .unwrap_or_else(|| panic!("sshd on {addr}:{port} exited early:\n{}", read_log(dir)));
        Some(sshd)
    }

    fn try_start(dir: &Path, addr: &str, port: u16) -> Option<Sshd> {
        let host_key = dir.join("ssh_host_ed25519_key");
        let client_key = dir.join("client_ed25519");
        for key in [&host_key, &client_key, &dir.join("wrong_host_ed25519_key")] {
            if !key.exists() {
                keygen(key);
            }
        }
        let client_pub = fs::read_to_string(dir.join("client_ed25519.pub")).expect("read client pub key");
        fs::write(dir.join("authorized_keys"), client_pub).expect("write authorized_keys");
        // Privilege separation needs this as root; harmless to fail when not root.
        let _ = fs::create_dir_all("/run/sshd");

        let config = dir.join("sshd_config");
        let body = format!(
            "ListenAddress {addr}\nPort {port}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nLogLevel VERBOSE\n",
            host_key.display(),
            dir.join("sshd.pid").display(),
            dir.join("authorized_keys").display(),
        );
        fs::write(&config, body).expect("write sshd_config");
        let log = fs::File::create(dir.join("sshd.log")).expect("create sshd.log");
        // sshd insists on being started by its absolute path.
        let mut child = tooling::command("sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sshd");
        if !wait_ready(Some(&mut child), addr, port, "sshd") {
            return None;
        }
        let (dir, addr, user) = (dir.to_path_buf(), addr.to_string(), stdout_of("id", "-un"));
        Some(Sshd { child, dir, addr, port, user })
    }

    /// "ssh://USER@ADDR:PORT/abs/path".
    pub fn url(&self, repo_abs_path: &Path) -> String {
        let (user, addr, port) = (&self.user, &self.addr, self.port);
        format!("ssh://{user}@{addr}:{port}{}", repo_abs_path.display())
    }

    /// "USER@ADDR:/abs/path"; only reaches this sshd when it listens on port 22.
    pub fn scp_url(&self, repo_abs_path: &Path) -> String {
        format!("{}@{}:{}", self.user, self.addr, repo_abs_path.display())
    }

    /// Private deploy key (mode 0600, or ssh refuses it).
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client_ed25519")
    }

    /// known_hosts pinning the real host key for "[ADDR]:PORT" (plain "ADDR" on port 22).
    pub fn known_hosts(&self) -> PathBuf {
        self.write_known_hosts("known_hosts", "ssh_host_ed25519_key.pub")
    }

    /// known_hosts pinning a different key for the same host, to prove ssh refuses an impostor.
    pub fn wrong_known_hosts(&self) -> PathBuf {
        self.write_known_hosts("wrong_known_hosts", "wrong_host_ed25519_key.pub")
    }

    /// sshd's stderr so far (sshd -D -e), for failure messages.
    pub fn log(&self) -> String {
        read_log(&self.dir)
    }

    fn write_known_hosts(&self, name: &str, pub_key: &str) -> PathBuf {
        let key = fs::read_to_string(self.dir.join(pub_key)).expect("read host pub key");
        // Drop the key comment: known_hosts wants "host type base64".
        let key: Vec<&str> = key.split_whitespace().take(2).collect();
        let host = match self.port {
            22 => self.addr.clone(),
            p => format!("[{}]:{p}", self.addr),
        };
        let path = self.dir.join(name);
        fs::write(&path, format!("{host} {}\n", key.join(" "))).expect("write known_hosts");
        path
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "gitops-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("spawn ssh-keygen");
    assert!(status.success(), "ssh-keygen failed for {path:?}");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod 0600 private key");
}

fn read_log(dir: &Path) -> String {
    fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
}

/// A TLS terminator (`socat`) in front of a plain HTTP server, with a certificate for 127.0.0.1 issued
/// by a private CA made for the test (a self-signed server certificate is not a CA to rustls).
pub struct TlsProxy {
    child: Child,
    port: u16,
    ca: PathBuf,
}

impl TlsProxy {
    /// Terminate TLS on a random port and forward to 127.0.0.1:`backend_port`; None (the test is
    /// skipped) without socat and openssl.
    #[must_use]
    pub fn start(dir: &Path, backend_port: u16) -> Option<TlsProxy> {
        if !tooling::available(&[tooling::SOCAT, tooling::OPENSSL]) {
            return None;
        }
        let (ca, cert, key) = (dir.join("tls-ca.pem"), dir.join("tls-cert.pem"), dir.join("tls-key.pem"));
        fs::write(
            dir.join("tls-ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        )
        .expect("write certificate extensions");
        let openssl = |args: &[&str]| {
            let status = tooling::command("openssl")
                .args(args)
                .current_dir(dir)
                .stderr(Stdio::null())
                .status()
                .expect("running openssl");
            assert!(status.success(), "openssl {args:?} failed");
        };
        openssl(
            &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"]
                .into_iter()
                .chain(["-subj", "/CN=gitops test CA", "-keyout", "tls-ca-key.pem", "-out", "tls-ca.pem"])
                .collect::<Vec<_>>(),
        );
        openssl(
            &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=127.0.0.1"]
                .into_iter()
                .chain(["-keyout", "tls-key.pem", "-out", "tls.csr"])
                .collect::<Vec<_>>(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "tls-ca.pem",
            "-CAkey",
            "tls-ca-key.pem",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "tls-ext.cnf",
            "-out",
            "tls-cert.pem",
        ]);
        for _ in 0..5 {
            let port = free_port();
            let listen = format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                cert.display(),
                key.display()
            );
            let mut child = tooling::command("socat")
                .arg(listen)
                .arg(format!("TCP:127.0.0.1:{backend_port}"))
                .stderr(Stdio::null())
                .spawn()
                .expect("running socat");
            thread::sleep(Duration::from_millis(50));
            if child.try_wait().expect("socat status").is_none() {
                wait_for_port("127.0.0.1", port, "socat TLS proxy");
                return Some(TlsProxy { child, port, ca });
            }
        }
        panic!("socat could not listen on a free port");
    }

    /// https URL of a repo behind the proxy.
    pub fn url(&self, repo_rel: &str) -> String {
        format!("https://127.0.0.1:{}/{}", self.port, repo_rel.trim_start_matches('/'))
    }

    /// The private CA's certificate, to trust.
    pub fn ca_file(&self) -> PathBuf {
        self.ca.clone()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request a `Recorder` received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Request method.
    pub method: String,
    /// Request target (path and query).
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The (de-chunked) body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// An HTTP server that records every request and answers with a settable status: a webhook receiver.
pub struct Recorder {
    requests: Arc<std::sync::Mutex<Vec<Recorded>>>,
    status: Arc<std::sync::atomic::AtomicU16>,
    acceptor: Acceptor,
}

impl Recorder {
    /// Listen on a random port.
    pub fn start() -> Recorder {
        Recorder::start_on(0)
    }

    /// Listen on `port` (0: random), e.g. to come back on the port a stopped recorder had.
    pub fn start_on(port: u16) -> Recorder {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind recorder");
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let status = Arc::new(std::sync::atomic::AtomicU16::new(204));
        let (reqs, code) = (requests.clone(), status.clone());
        let acceptor = Acceptor::start(listener, move |stream| {
            if let Err(e) = record_one(stream, &reqs, code.load(Ordering::SeqCst)) {
                eprintln!("Recorder: {e}");
            }
        });
        Recorder { requests, status, acceptor }
    }

    /// URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.acceptor.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.acceptor.port
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("recorder lock").clone()
    }

    /// Answer later requests with `status`.
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

fn record_one(stream: TcpStream, requests: &std::sync::Mutex<Vec<Recorded>>, status: u16) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let Some(request) = read_request(stream)? else { return Ok(()) };
    requests.lock().expect("recorder lock").push(request);
    write!(out, "HTTP/1.1 {status} Recorded\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    out.flush()
}

/// Read one whole request (head and body) from a connection of a test server; None when the
/// client closed without sending anything.
fn read_request(stream: TcpStream) -> std::io::Result<Option<Recorded>> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let Some(head) = read_head(&mut reader)? else { return Ok(None) };
    let body = read_body(&mut reader, &mut out, &head)?;
    let RequestHead { method, target: path, headers } = head;
    Ok(Some(Recorded { method, path, headers, body }))
}

/// A FleetLock server (the airlock protocol: POST /v1/pre-reboot takes the group's one slot if
/// it is free or already the client's, /v1/steady-state frees it), recording every request.
pub struct FleetLock {
    state: Arc<std::sync::Mutex<LockState>>,
    acceptor: Acceptor,
}

#[derive(Default)]
struct LockState {
    holder: Option<String>,
    /// (path, id, group) of every well-formed request.
    requests: Vec<(String, String, String)>,
    /// Requests refused because the fleet-lock-protocol header was missing.
    bad: usize,
}

impl FleetLock {
    /// Listen on a random port.
    pub fn start() -> FleetLock {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind FleetLock server");
        let state = Arc::new(std::sync::Mutex::new(LockState::default()));
        let shared = state.clone();
        let acceptor = Acceptor::start(listener, move |stream| {
            if let Err(e) = answer_fleetlock(stream, &shared) {
                eprintln!("FleetLock: {e}");
            }
        });
        FleetLock { state, acceptor }
    }

    /// The base URL, for --fleetlock-url.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.acceptor.port)
    }

    /// (path, id, group) of every well-formed request, in order.
    pub fn requests(&self) -> Vec<(String, String, String)> {
        self.state.lock().expect("fleetlock lock").requests.clone()
    }

    /// Who holds the slot.
    pub fn holder(&self) -> Option<String> {
        self.state.lock().expect("fleetlock lock").holder.clone()
    }

    /// How many requests lacked `fleet-lock-protocol: true` or a client id.
    pub fn bad_requests(&self) -> usize {
        self.state.lock().expect("fleetlock lock").bad
    }
}

fn answer_fleetlock(stream: TcpStream, state: &std::sync::Mutex<LockState>) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let Some(request) = read_request(stream)? else { return Ok(()) };
    let (status, reply) = {
        let mut state = state.lock().expect("fleetlock lock");
        let params: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let id = params["client_params"]["id"].as_str().unwrap_or_default().to_string();
        let group = params["client_params"]["group"].as_str().unwrap_or_default().to_string();
        if request.header("fleet-lock-protocol") != Some("true") || id.is_empty() {
            state.bad += 1;
            ("400 Bad Request", r#"{"kind":"bad_request","value":"missing fleet-lock-protocol header"}"#.to_string())
        } else {
            state.requests.push((request.path.clone(), id.clone(), group));
            match request.path.as_str() {
                "/v1/pre-reboot" if state.holder.as_ref().is_none_or(|h| *h == id) => {
                    state.holder = Some(id);
                    ("200 OK", String::new())
                }
                "/v1/pre-reboot" => {
                    let holder = state.holder.clone().unwrap_or_default();
                    ("409 Conflict", format!(r#"{{"kind":"failed_lock","value":"semaphore held by {holder}"}}"#))
                }
                "/v1/steady-state" => {
                    if state.holder.as_ref() == Some(&id) {
                        state.holder = None;
                    }
                    ("200 OK", String::new())
                }
                _ => ("404 Not Found", String::new()),
            }
        }
    };
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    out.flush()
}

/// How a `FaultyProxy` treats connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways.
    Healthy,
    /// Accept, then never forward anything (a stalled network).
    Stall,
    /// Forward the first N bytes from the server, then cut both directions.
    DropAfter(usize),
}

/// A TCP proxy between gitops and a Git server that injects network faults.
pub struct FaultyProxy {
    fault: Arc<std::sync::Mutex<Fault>>,
    acceptor: Acceptor,
}

impl FaultyProxy {
    /// Proxy 127.0.0.1:random to 127.0.0.1:`backend_port`.
    pub fn start(backend_port: u16, fault: Fault) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let fault = Arc::new(std::sync::Mutex::new(fault));
        let mode = fault.clone();
        let acceptor = Acceptor::start(listener, move |client| {
            let fault = *mode.lock().expect("proxy lock");
            thread::spawn(move || proxy_one(client, backend_port, fault));
        });
        FaultyProxy { fault, acceptor }
    }

    /// The port gitops should connect to.
    pub fn port(&self) -> u16 {
        self.acceptor.port
    }

    /// Change the fault for new connections.
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().expect("proxy lock") = fault;
    }
}

fn proxy_one(client: TcpStream, backend_port: u16, fault: Fault) {
    if fault == Fault::Stall {
        // Hold the connection open and say nothing, until the client gives up.
        let mut sink = [0u8; 4096];
        let mut reader = client;
        let _ = reader.set_read_timeout(Some(Duration::from_secs(120)));
        while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", backend_port)) else { return };
    let limit = match fault {
        Fault::DropAfter(n) => n,
        _ => usize::MAX,
    };
    let (mut client_read, mut server_write) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
    thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut server_write);
        let _ = server_write.shutdown(Shutdown::Write);
    });
    let (mut server_read, mut client_write) = (server, client);
    let mut forwarded = 0;
    let mut buf = [0u8; 4096];
    loop {
        let n = match server_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let take = n.min(limit - forwarded);
        if client_write.write_all(&buf[..take]).is_err() {
            break;
        }
        forwarded += take;
        if forwarded >= limit {
            let _ = client_write.shutdown(Shutdown::Both);
            let _ = server_read.shutdown(Shutdown::Both);
            return;
        }
    }
    let _ = client_write.shutdown(Shutdown::Write);
}
