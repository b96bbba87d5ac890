//! Read the fleet from the Prometheus HTTP API (`/api/v1/query`): a handful of instant queries
//! whatever the fleet's size, and a few more only for hosts that stopped reporting.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

use super::Host;

/// Per-request time limit.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Instances per query when asking about silent hosts by name (keeps URLs short).
const CHUNK: usize = 200;

/// The gauges, read as numbers (the two commit timestamps also for their labels: the newest wins).
const GAUGES: [&str; 8] = [
    "gitops_applied_commit_timestamp_seconds",
    "gitops_remote_commit_timestamp_seconds",
    "gitops_commits_behind",
    "gitops_last_run_timestamp_seconds",
    "gitops_last_success_timestamp_seconds",
    "gitops_consecutive_failures",
    "gitops_reboot_pending",
    "gitops_reboot_pending_since_timestamp_seconds",
];
/// The info metrics, read for their labels.
const INFOS: [&str; 3] = ["gitops_info", "gitops_applied_commit_info", "gitops_remote_commit_info"];

/// Where and how to ask.
#[derive(Debug, Clone)]
pub struct Query {
    /// Base URL of Prometheus (credentials allowed: sent as basic auth, never shown).
    pub url: String,
    /// Label matchers every series must carry, without braces: `job="node"`.
    pub matchers: String,
    /// How far back a host that stopped reporting is still remembered.
    pub lookback: Duration,
}

/// `{job="node"}` (or `job="node"`, or empty) as the matchers inside braces; rejects what cannot be one.
pub fn matchers(selector: &str) -> Result<String, String> {
    let inner = selector.trim();
    let inner = match (inner.strip_prefix('{'), inner.ends_with('}')) {
        (Some(rest), true) => &rest[..rest.len() - 1],
        (None, false) => inner,
        _ => return Err(format!("--selector {selector:?} has unbalanced braces; write it like '{{job=\"node\"}}'")),
    };
    if inner.contains(['{', '}']) || inner.contains("__name__") {
        return Err(format!(
            "--selector {selector:?} must be label matchers only, like '{{job=\"node\",env=\"prod\"}}'"
        ));
    }
    Ok(inner.trim().trim_end_matches(',').to_string())
}

/// Every host seen within the lookback, as Prometheus knows it at `now`.
pub fn hosts(query: &Query, now: f64) -> anyhow::Result<Vec<Host>> {
    let client = Client::new(&query.url)?;
    let sel = |extra: &str| {
        let parts: Vec<&str> = [query.matchers.as_str(), extra].into_iter().filter(|p| !p.is_empty()).collect();
        parts.join(",")
    };
    let names = |list: &[&str]| format!("__name__=~\"{}\"", list.join("|"));
    let lookback = format!("{}s", query.lookback.as_secs().max(1));
    let mut hosts: BTreeMap<(String, String), Host> = BTreeMap::new();

    // Everyone seen lately; then what the hosts reporting now say.
    for sample in client.query(&format!("last_over_time(gitops_info{{{}}}[{lookback}])", sel("")), now)? {
        host_of(&mut hosts, &sample);
    }
    for sample in client.query(&format!("up{{{}}}", sel("")), now)? {
        if let Some(host) = hosts.get_mut(&key(&sample)) {
            host.reporting = sample.value == 1.0;
        }
    }
    let current = client.query(&format!("{{{}}}", sel(&names(&[&INFOS[..], &GAUGES[..]].concat()))), now)?;
    let result = client.query(&format!("gitops_last_result{{{}}} == 1", sel("")), now)?;
    let fresh: std::collections::BTreeSet<(String, String)> = current.iter().map(key).collect();
    for sample in current.iter().chain(&result) {
        fill(&mut hosts, sample);
    }

    // Hosts gone quiet: their last values within the lookback (a commit metric keeps one series per
    // commit the host ran; its timestamp companion says which is the newest).
    let silent: Vec<String> =
        hosts.keys().filter(|k| !fresh.contains(*k)).map(|(_, instance)| instance.clone()).collect();
    for chunk in silent.chunks(CHUNK) {
        let instances =
            format!("instance=~\"{}\"", chunk.iter().map(|i| regex_escape(i)).collect::<Vec<_>>().join("|"));
        let gauges = format!("last_over_time({{{}}}[{lookback}])", sel(&format!("{},{instances}", names(&GAUGES))));
        let result = format!("last_over_time(gitops_last_result{{{}}}[{lookback}]) == 1", sel(&instances));
        for sample in client.query(&gauges, now)?.iter().chain(&client.query(&result, now)?) {
            fill(&mut hosts, sample);
        }
    }
    Ok(hosts.into_values().collect())
}

/// One sample of an instant vector.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<String> {
        self.labels.get(name).filter(|v| !v.is_empty()).cloned()
    }
}

/// A host is a scrape target: (job, instance).
fn key(sample: &Sample) -> (String, String) {
    (sample.label("job").unwrap_or_default(), sample.label("instance").unwrap_or_default())
}

/// The host a `gitops_info` sample belongs to, created on first sight.
fn host_of<'a>(hosts: &'a mut BTreeMap<(String, String), Host>, sample: &Sample) -> &'a mut Host {
    hosts.entry(key(sample)).or_insert_with(|| {
        let (job, instance) = key(sample);
        let host = sample.label("host").unwrap_or_else(|| instance.clone());
        Host { host, version: sample.label("version"), instance, job, ..Host::default() }
    })
}

/// Put one sample into its host (samples of hosts never seen with `gitops_info` are ignored).
fn fill(hosts: &mut BTreeMap<(String, String), Host>, sample: &Sample) {
    let Some(host) = hosts.get_mut(&key(sample)) else { return };
    let value = sample.value;
    let name = sample.label("__name__").unwrap_or_default();
    match name.as_str() {
        "gitops_info" => {
            host.host = sample.label("host").unwrap_or_else(|| host.instance.clone());
            host.version = sample.label("version");
        }
        "gitops_applied_commit_info" => {
            host.live_commit = sample.label("commit");
            host.branch = sample.label("branch").or(host.branch.take());
        }
        "gitops_remote_commit_info" => {
            host.remote_commit = sample.label("commit");
            host.branch = host.branch.take().or(sample.label("branch"));
        }
        "gitops_applied_commit_timestamp_seconds" if host.live_since.is_none_or(|t| value > t) => {
            host.live_since = Some(value);
            host.live_commit = sample.label("commit");
            host.branch = sample.label("branch").or(host.branch.take());
        }
        "gitops_remote_commit_timestamp_seconds" if host.remote_commit_time.is_none_or(|t| value > t) => {
            host.remote_commit_time = Some(value);
            host.remote_commit = sample.label("commit");
            host.branch = host.branch.take().or(sample.label("branch"));
        }
        "gitops_commits_behind" => host.commits_behind = Some(value as u64),
        "gitops_last_run_timestamp_seconds" => host.last_run = Some(value),
        "gitops_last_success_timestamp_seconds" => host.last_success = (value > 0.0).then_some(value),
        "gitops_consecutive_failures" => host.consecutive_failures = value as u64,
        "gitops_reboot_pending" if value == 0.0 => host.reboot_pending_since = None,
        "gitops_reboot_pending_since_timestamp_seconds" => host.reboot_pending_since = Some(value),
        "gitops_last_result" => host.last_result = sample.label("result"),
        _ => {}
    }
}

/// `.` and friends escaped for a `=~` matcher (instances are host:port, so few are special).
fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out.replace('\\', "\\\\")
}

/// The Prometheus HTTP API.
struct Client {
    agent: ureq::Agent,
    /// Query endpoint without credentials.
    endpoint: String,
    /// URL for messages (password replaced).
    shown: String,
    /// Basic auth from the URL's userinfo.
    auth: Option<String>,
}

impl Client {
    fn new(url: &str) -> anyhow::Result<Client> {
        let shown = crate::redact::url(url);
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| anyhow!("--prometheus {shown}: not an http(s) URL"))?;
        if scheme != "http" && scheme != "https" {
            bail!(
                "--prometheus {shown}: not an http(s) URL; give the Prometheus server's base URL, e.g. http://prometheus:9090"
            );
        }
        let (authority, path) =
            rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, String::new()));
        let (auth, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                use base64::Engine as _;
                (Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(userinfo))), host)
            }
            None => (None, authority),
        };
        let endpoint = format!("{scheme}://{host}{}/api/v1/query", path.trim_end_matches('/'));
        Ok(Client { agent: crate::http::agent(TIMEOUT), endpoint, shown, auth })
    }

    /// An instant query evaluated at `time`; the samples of the vector it returns.
    fn query(&self, promql: &str, time: f64) -> anyhow::Result<Vec<Sample>> {
        log::debug!("prometheus query: {promql}");
        let time = format!("{time:.3}");
        let mut request = self.agent.get(&self.endpoint).query("query", promql).query("time", &time);
        request = request.header("User-Agent", crate::http::USER_AGENT);
        if let Some(auth) = &self.auth {
            request = request.header("Authorization", auth);
        }
        let shown = &self.shown;
        let mut response = request
            .call()
            .map_err(|e| anyhow!("querying Prometheus at {shown}: {e}; check --prometheus and that it is up"))?;
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(512 * 1024 * 1024)
            .read_to_vec()
            .with_context(|| format!("reading the answer of Prometheus at {shown}"))?;
        let json: Value = serde_json::from_slice(&body).map_err(|_| {
            anyhow!("Prometheus at {shown} answered HTTP {status} with something that is not its API's JSON; check --prometheus")
        })?;
        parse(&json).map_err(|e| anyhow!("Prometheus at {shown}: {e}"))
    }
}

/// The samples of an instant-vector answer, or the error Prometheus gave.
fn parse(json: &Value) -> Result<Vec<Sample>, String> {
    if json["status"] != "success" {
        return Err(format!(
            "query refused ({}: {})",
            json["errorType"].as_str().unwrap_or("error"),
            json["error"].as_str().unwrap_or("no message")
        ));
    }
    let Some(result) = json["data"]["result"].as_array() else {
        return Err("answer without data.result".into());
    };
    Ok(result
        .iter()
        .filter_map(|item| {
            let labels = item["metric"]
                .as_object()?
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect();
            let value = item["value"][1].as_str()?.parse().ok()?;
            Some(Sample { labels, value })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_matchers_with_or_without_braces() {
        assert_eq!(matchers("{job=\"node\"}").unwrap(), "job=\"node\"");
        assert_eq!(matchers("job=\"node\",env=\"prod\"").unwrap(), "job=\"node\",env=\"prod\"");
        assert_eq!(matchers("").unwrap(), "");
        assert!(matchers("{job=\"node\"").is_err());
        assert!(matchers("up{job=\"node\"}").is_err());
        assert!(matchers("{__name__=\"x\"}").is_err());
    }

    #[test]
    fn an_answer_becomes_samples_and_an_error_its_message() {
        let ok = serde_json::json!({"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"gitops_info","instance":"a:9100","job":"node","host":"a","version":"1"},"value":[1.0,"1"]}]}});
        let samples = parse(&ok).unwrap();
        assert_eq!(samples[0].label("host").as_deref(), Some("a"));
        assert_eq!(samples[0].value, 1.0);
        let refused = serde_json::json!({"status":"error","errorType":"bad_data","error":"parse error"});
        assert_eq!(parse(&refused).unwrap_err(), "query refused (bad_data: parse error)");
    }

    #[test]
    fn every_name_queried_is_one_the_textfile_has() {
        for name in GAUGES.iter().chain(&INFOS).chain(&["gitops_last_result"]) {
            assert!(crate::metrics::NAMES.contains(name), "{name}");
        }
    }

    #[test]
    fn instances_are_escaped_for_a_regex_matcher() {
        assert_eq!(regex_escape("10.0.0.1:9100"), "10\\\\.0\\\\.0\\\\.1:9100");
    }

    #[test]
    fn samples_fill_their_host() {
        let mut hosts = BTreeMap::new();
        let sample = |name: &str, labels: &[(&str, &str)], value: f64| {
            let mut all: BTreeMap<String, String> =
                labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            all.insert("__name__".into(), name.into());
            all.insert("instance".into(), "a:9100".into());
            all.insert("job".into(), "node".into());
            Sample { labels: all, value }
        };
        host_of(&mut hosts, &sample("gitops_info", &[("host", "web-1")], 1.0));
        fill(&mut hosts, &sample("gitops_applied_commit_info", &[("commit", "abc"), ("branch", "main")], 1.0));
        fill(&mut hosts, &sample("gitops_last_result", &[("result", "applied")], 1.0));
        fill(&mut hosts, &sample("gitops_last_success_timestamp_seconds", &[], 0.0));
        fill(&mut hosts, &sample("gitops_consecutive_failures", &[], 2.0));
        let host = hosts.values().next().unwrap();
        assert_eq!(host.host, "web-1");
        assert_eq!(host.live_commit.as_deref(), Some("abc"));
        assert_eq!(host.branch.as_deref(), Some("main"));
        assert_eq!(host.last_result.as_deref(), Some("applied"));
        assert_eq!(host.last_success, None);
        assert_eq!(host.consecutive_failures, 2);
    }
}
