//! Debian's real nginx, started by a test on 127.0.0.1 with its own config (static files: a change
//! probe), and a TCP proxy that counts the connections reaching a Git server behind it.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use super::servers::{free_port, wait_for_port};
use super::tooling;

/// nginx serving `root` as static files (ETag and Last-Modified on, as by default), logging every request.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    /// Start nginx in the foreground with a config in `dir`; None (the test is skipped) without nginx.
    #[must_use]
    pub fn static_files(dir: &Path, root: &Path) -> Option<Nginx> {
        if !tooling::available(&[tooling::NGINX]) {
            return None;
        }
        fs::create_dir_all(dir.join("tmp")).unwrap();
        for _ in 0..5 {
            let port = free_port();
            // As root the workers would drop to nobody, who cannot read a test's 0700 temp dirs.
            let user = if super::is_root() { "user root;\n" } else { "" };
            let config = format!(
                "{user}daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n\
                 fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
                 server {{ listen 127.0.0.1:{port}; root {root}; location / {{ }} }}\n}}\n",
                d = dir.display(),
                root = root.display(),
            );
            fs::write(dir.join("nginx.conf"), config).unwrap();
            let mut child = tooling::command("nginx")
                .arg("-p")
                .arg(dir)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("running nginx");
            thread::sleep(std::time::Duration::from_millis(50));
            if child.try_wait().expect("nginx status").is_none() {
                wait_for_port("127.0.0.1", port, "nginx");
                return Some(Nginx { child, dir: dir.to_path_buf(), port });
            }
        }
        panic!("nginx exited early 5 times:\n{}", fs::read_to_string(dir.join("error.log")).unwrap_or_default());
    }

    /// URL of `path` (relative to the root).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, path.trim_start_matches('/'))
    }

    /// The status codes of the requests served so far, oldest first (from the access log).
    pub fn statuses(&self) -> Vec<u16> {
        fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            // combined format: 127.0.0.1 - - [date] "GET /x HTTP/1.1" 304 0 "-" "agent"
            .filter_map(|line| line.split('"').nth(2)?.split_whitespace().next()?.parse().ok())
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master stops its workers first, which a killed master would orphan.
        // SAFETY: kill(2) only sends a signal, to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// A TCP proxy on 127.0.0.1 in front of a server, counting the connections it accepted.
pub struct CountingProxy {
    port: u16,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl CountingProxy {
    /// Forward 127.0.0.1:random to 127.0.0.1:`backend_port`.
    pub fn start(backend_port: u16) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind counting proxy");
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (connections.clone(), stop.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || forward(client, backend_port));
            }
        });
        CountingProxy { port, connections, stop }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // accept() has no timeout: a connection wakes it up (and is not counted: the flag is checked first).
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn forward(client: TcpStream, backend_port: u16) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", backend_port)) else { return };
    let (mut up_from, mut up_to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    thread::spawn(move || {
        let _ = pipe(&mut up_from, &mut up_to);
        let _ = up_to.shutdown(Shutdown::Write);
    });
    let (mut down_from, mut down_to) = (server, client);
    let _ = pipe(&mut down_from, &mut down_to);
    let _ = down_to.shutdown(Shutdown::Write);
}

fn pipe(from: &mut TcpStream, to: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 16384];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
    }
}
