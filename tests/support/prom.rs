//! Debian's real Prometheus and node exporter, started by the test on 127.0.0.1: the fleet view's
//! engine. Each exporter serves one simulated host's textfile directory, and runs as `nobody` when
//! the test is root (as Debian's unit runs it as `prometheus`), so a metrics file that only root can
//! read never reaches Prometheus.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::servers::{free_port, wait_for_port};
use super::tooling;

/// What the fleet-view tests need.
pub const NEEDS: &[tooling::Need] = &[tooling::PROMETHEUS, tooling::NODE_EXPORTER, tooling::PROMTOOL];

/// A uid without privileges for the exporter (Debian's `nobody`).
const NOBODY: u32 = 65534;

/// A directory other users can traverse (textfile directories live in one).
pub fn public_dir(path: &Path) -> PathBuf {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

/// One node exporter with only the textfile collector.
pub struct NodeExporter {
    child: Option<Child>,
    /// host:port it listens on.
    pub address: String,
}

impl NodeExporter {
    /// Serve `textfile_dir` (its parents must be traversable by `nobody`).
    pub fn start(textfile_dir: &Path) -> NodeExporter {
        NodeExporter::start_on(textfile_dir, free_port())
    }

    /// `start` on a given port (a host that comes back where Prometheus expects it).
    pub fn start_on(textfile_dir: &Path, port: u16) -> NodeExporter {
        let mut command = tooling::command("prometheus-node-exporter");
        command
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!("--collector.textfile.directory={}", textfile_dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if super::is_root() {
            command.uid(NOBODY).gid(NOBODY);
        }
        let child = command.spawn().expect("starting prometheus-node-exporter");
        wait_for_port("127.0.0.1", port, "prometheus-node-exporter");
        NodeExporter { child: Some(child), address: format!("127.0.0.1:{port}") }
    }

    /// The exporter's own page: what Prometheus would scrape.
    pub fn scrape(&self) -> String {
        http_get(&self.address, "/metrics").1
    }

    /// Stop it: the host goes silent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Prometheus scraping a fixed list of targets every second under job "node".
pub struct Prometheus {
    child: Child,
    /// Base URL, e.g. http://127.0.0.1:9090.
    pub url: String,
    address: String,
    log: PathBuf,
}

impl Prometheus {
    /// Start with `targets` (host:port) and the given rule files, data in `dir`.
    pub fn start(dir: &Path, targets: &[String], rule_files: &[PathBuf]) -> Prometheus {
        fs::create_dir_all(dir).unwrap();
        let config = dir.join("prometheus.yml");
        let quoted: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let rules: Vec<String> = rule_files.iter().map(|r| format!("'{}'", r.display())).collect();
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{}]\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: [{}]\n",
                rules.join(", "),
                quoted.join(", ")
            ),
        )
        .unwrap();
        let port = free_port();
        let log = dir.join("prometheus.log");
        let child = tooling::command("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-admin-api")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting prometheus");
        let address = format!("127.0.0.1:{port}");
        let prometheus = Prometheus { child, url: format!("http://{address}"), address, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get_opt(&prometheus.address, "/-/ready").is_none_or(|(status, _)| status != 200) {
            assert!(Instant::now() < deadline, "prometheus not ready in 30 s:\n{}", prometheus.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    /// Prometheus's own log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query; the `data.result` array of the answer (panics on an error answer).
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let (status, body) = http_get(&self.address, &format!("/api/v1/query?query={}", encode(promql)));
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(json["status"], "success", "query {promql} answered {status}: {body}");
        json["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Wait until `promql` returns at least `n` series.
    pub fn wait_for(&self, promql: &str, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.query(promql);
            if result.len() >= n {
                return result;
            }
            assert!(Instant::now() < deadline, "{promql}: {} series, not {n}, within {timeout:?}", result.len());
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encode a query parameter.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET over plain HTTP/1.0: (status, body); panics when nothing answers.
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    http_get_opt(address, path).unwrap_or_else(|| panic!("GET http://{address}{path}: no answer"))
}

fn http_get_opt(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}
