//! Read the fleet from the Prometheus HTTP API (`/api/v1/query`): a handful of instant queries
//! whatever the fleet's size, and a few more only for hosts that stopped reporting.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use std::borrow::Cow;

use super::Host;
use crate::outcome::Outcome;

/// Per-request time limit.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Instances per query when asking about silent hosts by name (keeps URLs short).
const CHUNK: usize = 200;
/// Quiet hosts per query when reading their last textfile (each has its own window: longer URLs).
const QUIET_CHUNK: usize = 50;

/// What is read per host, one query per name (run side by side: one small query per metric is far
/// cheaper for Prometheus than one regex over names). The exit code stands for the result: it is one
/// series per host where `gitops_last_result` is one per outcome. The commit metrics are read through
/// their timestamps, whose value tells the newest series apart; the labelled series (whose labels
/// are the news, their value 1) come after them: a live commit's result belongs to the live commit
/// its timestamp chose.
const READ: [&str; 13] = [
    "gitops_live_commit_timestamp_seconds",
    "gitops_applied_commit_timestamp_seconds",
    "gitops_remote_commit_timestamp_seconds",
    "gitops_last_exit_code",
    "gitops_last_run_timestamp_seconds",
    "gitops_last_success_timestamp_seconds",
    "gitops_commits_behind",
    "gitops_consecutive_failures",
    "gitops_reboot_pending_since_timestamp_seconds",
    "gitops_deferred_until_timestamp_seconds",
    "gitops_live_commit_info",
    "gitops_last_error_info",
    "gitops_deferred",
];

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

/// The example every selector message ends with.
const EXAMPLE: &str = r#"{job="node"}"#;

/// `{job="node"}` (or `job="node"`, or empty) as the matchers inside braces. What cannot be label
/// matchers is refused here, before Prometheus is asked, with the flag and the selector as typed:
/// an unquoted value, a metric name, a missing comma.
pub fn matchers(flag: &str, selector: &str) -> Result<String, String> {
    let typed = selector.trim();
    let refuse = |problem: String, like: &str| format!("{flag} '{typed}': {problem}; write matchers like {like}");
    let inner = match (typed.strip_prefix('{'), typed.ends_with('}')) {
        (Some(rest), true) => &rest[..rest.len() - 1],
        (None, false) => typed,
        (None, true) if typed.split_once('{').is_some_and(|(name, _)| is_metric_name(name.trim())) => {
            let name = typed.split('{').next().unwrap_or(typed).trim();
            return Err(refuse(format!("{name} is a metric name; give the label matchers alone"), EXAMPLE));
        }
        _ => return Err(refuse("unbalanced braces".into(), EXAMPLE)),
    };
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let name_len =
            rest.find(|c: char| c.is_whitespace() || matches!(c, '=' | '!' | '~' | ',')).unwrap_or(rest.len());
        let name = &rest[..name_len];
        let label_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !label_name {
            return Err(refuse(format!("{name:?} is not a label name (letters, digits and _)"), EXAMPLE));
        }
        if name == "__name__" {
            return Err(refuse("the metric name is not for the selector to pick".into(), EXAMPLE));
        }
        rest = rest[name_len..].trim_start();
        let Some(op) = ["=~", "!~", "!=", "="].into_iter().find(|op| rest.starts_with(op)) else {
            let problem = if rest.is_empty() && inner.trim() == name {
                format!("{name} alone is a metric name, not a label matcher")
            } else {
                format!("{name} has no =, !=, =~ or !~")
            };
            return Err(refuse(problem, EXAMPLE));
        };
        rest = rest[op.len()..].trim_start();
        let Some(value_len) = quoted_len(rest) else {
            let value = rest.split(',').next().unwrap_or(rest).trim();
            let problem = if rest.starts_with(['"', '\'', '`']) {
                format!("the value of {name} has no closing quote")
            } else {
                format!("the value of {name} is not quoted")
            };
            return Err(refuse(problem, &format!("{{{name}{op}\"{}\"}}", value.trim_matches(['"', '\'', '`']))));
        };
        rest = rest[value_len..].trim_start();
        match rest.strip_prefix(',') {
            Some(next) => rest = next.trim_start(),
            None if rest.is_empty() => {}
            None => {
                return Err(refuse(
                    format!("a comma is missing after the matcher of {name}"),
                    r#"{job="node",env="prod"}"#,
                ));
            }
        }
    }
    Ok(inner.trim().trim_end_matches(',').trim_end().to_string())
}

/// Whether `text` is a metric name (`up`, `node:cpu:rate5m`).
fn is_metric_name(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The length of the PromQL string literal `text` starts with ("…" or '…' with backslash escapes,
/// `…` raw), None if it does not start with one or it is not closed.
fn quoted_len(text: &str) -> Option<usize> {
    let quote = text.chars().next().filter(|c| matches!(c, '"' | '\'' | '`'))?;
    let mut escaped = false;
    for (at, c) in text.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' if quote != '`' => escaped = true,
            '\n' if quote != '`' => return None,
            c if c == quote => return Some(at + 1),
            _ => {}
        }
    }
    None
}

/// Every host seen within the lookback, as Prometheus knows it at `now`.
pub fn hosts(query: &Query, now: f64) -> anyhow::Result<Vec<Host>> {
    let client = Client::new(&query.url)?;
    let sel = |extra: &str| and(&query.matchers, extra);
    let lookback = format!("{}s", query.lookback.as_secs().max(1));
    let mut hosts: BTreeMap<(String, String), Host> = BTreeMap::new();

    // Everyone seen lately, whether their exporter answers, and what the hosts reporting now say.
    let mut fresh_queries = vec![
        ("gitops_info", format!("last_over_time(gitops_info{{{}}}[{lookback}])", sel(""))),
        ("up", format!("up{{{}}}", sel(""))),
    ];
    fresh_queries.extend(READ.iter().map(|name| (*name, format!("{name}{{{}}}", sel("")))));
    let answers = client.query_all(&fresh_queries, now)?;
    for sample in &answers[0] {
        host_of(&mut hosts, sample);
    }
    let mut fresh = std::collections::BTreeSet::new();
    for sample in answers[1..].iter().flatten() {
        if sample.name == "gitops_last_run_timestamp_seconds" {
            fresh.insert(key(sample));
        }
        fill(&mut hosts, sample);
    }

    // Hosts gone quiet: when they last ran, then what the textfile of that run said (the series
    // scraped since: not an error since fixed, a deferral since over, a commit since replaced).
    let silent: Vec<String> =
        hosts.keys().filter(|k| !fresh.contains(*k)).map(|(_, instance)| instance.clone()).collect();
    for chunk in silent.chunks(CHUNK) {
        let instances =
            format!("instance=~\"{}\"", chunk.iter().map(|i| regex_escape(i)).collect::<Vec<_>>().join("|"));
        let name = "gitops_last_run_timestamp_seconds";
        let promql = format!("last_over_time({name}{{{}}}[{lookback}])", sel(&instances));
        for sample in client.query_all(&[(name, promql)], now)?.iter().flatten() {
            fill(&mut hosts, sample);
        }
    }
    let quiet: Vec<((String, String), f64)> = hosts
        .iter()
        .filter(|(k, _)| !fresh.contains(*k))
        .filter_map(|(k, host)| host.last_run.map(|at| (k.clone(), at)))
        .collect();
    for chunk in quiet.chunks(QUIET_CHUNK) {
        let queries: Vec<(&str, String)> = READ
            .iter()
            .filter(|name| **name != "gitops_last_run_timestamp_seconds")
            .map(|name| {
                let terms: Vec<String> = chunk
                    .iter()
                    .map(|((job, instance), last_run)| {
                        let one = format!("job=\"{}\",instance=\"{}\"", string(job), string(instance));
                        let since = ((now - last_run) * 1000.0).ceil().max(1.0);
                        format!("last_over_time({name}{{{}}}[{since}ms])", sel(&one))
                    })
                    .collect();
                (*name, terms.join(" or "))
            })
            .collect();
        for sample in client.query_all(&queries, now)?.iter().flatten() {
            fill(&mut hosts, sample);
        }
    }
    let mut hosts: Vec<Host> = hosts.into_values().collect();
    hosts.iter_mut().for_each(version_one);
    Ok(hosts)
}

/// A host still on metrics version 1 has no live-commit series: its applied commit was the live one.
fn version_one(host: &mut Host) {
    if host.live_commit.is_none() && host.applied_commit.is_some() {
        host.live_commit = host.applied_commit.clone();
        host.live_since = host.applied_at;
    }
}

/// The scrape jobs under which Prometheus has gitops hosts, whatever the selector, with how many:
/// the hint when a selector matched nothing.
pub fn jobs(url: &str, lookback: Duration, now: f64) -> anyhow::Result<Vec<(String, usize)>> {
    let client = Client::new(url)?;
    let lookback = format!("{}s", lookback.as_secs().max(1));
    let promql = format!("count by (job) (last_over_time(gitops_info[{lookback}]))");
    let answers = client.query_all(&[("jobs", promql)], now)?;
    let mut jobs: Vec<(String, usize)> = answers.iter().flatten().map(|s| (s.job.clone(), s.value as usize)).collect();
    jobs.sort();
    Ok(jobs)
}

/// The canaries (hosts named in `names`, or carrying one of `tags`) that reported within `recent`, with
/// their live and remote commits and last result: the few queries a rollout gate makes, whatever the
/// fleet's size.
pub fn canaries(
    url: &str,
    matchers: &str,
    names: &[String],
    tags: &[String],
    recent: Duration,
    now: f64,
) -> anyhow::Result<Vec<Host>> {
    let client = Client::new(url)?;
    let sel = |extra: &str| and(matchers, extra);
    let any = |items: &[String]| items.iter().map(|i| regex_escape(i)).collect::<Vec<_>>().join("|");
    let recent = format!("{}s", recent.as_secs().max(1));
    let mut selectors = Vec::new();
    if !names.is_empty() {
        selectors.push(format!("host=~\"{}\"", any(names)));
    }
    if !tags.is_empty() {
        selectors.push(format!("tags=~\"(.*,)?({})(,.*)?\"", any(tags)));
    }
    let seen = selectors
        .iter()
        .map(|s| format!("last_over_time(gitops_info{{{}}}[{recent}])", sel(s)))
        .collect::<Vec<_>>()
        .join(" or ");
    let mut hosts: BTreeMap<(String, String), Host> = BTreeMap::new();
    if seen.is_empty() {
        return Ok(Vec::new());
    }
    for sample in client.query_all(&[("gitops_info", seen)], now)?.iter().flatten() {
        host_of(&mut hosts, sample);
    }
    let instances: Vec<String> = hosts.keys().map(|(_, instance)| regex_escape(instance)).collect();
    for chunk in instances.chunks(CHUNK) {
        let only = format!("instance=~\"{}\"", chunk.join("|"));
        let queries: Vec<(&'static str, String)> = [
            "gitops_live_commit_timestamp_seconds",
            "gitops_applied_commit_timestamp_seconds",
            "gitops_remote_commit_timestamp_seconds",
            "gitops_last_exit_code",
            "gitops_live_commit_info",
        ]
        .into_iter()
        .map(|name| (name, format!("{name}{{{}}}", sel(&only))))
        .collect();
        for sample in client.query_all(&queries, now)?.iter().flatten() {
            fill(&mut hosts, sample);
        }
    }
    let mut hosts: Vec<Host> = hosts.into_values().collect();
    hosts.iter_mut().for_each(version_one);
    Ok(hosts)
}

/// Two lists of label matchers as one (either may be empty).
fn and(matchers: &str, extra: &str) -> String {
    let parts: Vec<&str> = [matchers, extra].into_iter().filter(|p| !p.is_empty()).collect();
    parts.join(",")
}

/// One sample of an instant vector: the labels the fleet view reads, and the value.
#[derive(Debug, Clone, Default, PartialEq)]
struct Sample {
    /// The metric the query asked for.
    name: &'static str,
    job: String,
    instance: String,
    /// `host`, `version` (gitops_info); `commit`, `branch` (commit metrics).
    host: Option<String>,
    version: Option<String>,
    commit: Option<String>,
    branch: Option<String>,
    /// `kind` (gitops_deferred).
    kind: Option<String>,
    /// `result` (gitops_live_commit_info).
    result: Option<String>,
    /// `error` (gitops_last_error_info).
    error: Option<String>,
    value: f64,
}

/// A host is a scrape target: (job, instance).
fn key(sample: &Sample) -> (String, String) {
    (sample.job.clone(), sample.instance.clone())
}

/// The host a `gitops_info` sample belongs to, created on first sight.
fn host_of<'a>(hosts: &'a mut BTreeMap<(String, String), Host>, sample: &Sample) -> &'a mut Host {
    hosts.entry(key(sample)).or_insert_with(|| Host {
        host: sample.host.clone().unwrap_or_else(|| sample.instance.clone()),
        version: sample.version.clone(),
        instance: sample.instance.clone(),
        job: sample.job.clone(),
        ..Host::default()
    })
}

/// Put one sample into its host (samples of hosts never seen with `gitops_info` are ignored).
fn fill(hosts: &mut BTreeMap<(String, String), Host>, sample: &Sample) {
    let Some(host) = hosts.get_mut(&key(sample)) else { return };
    let value = sample.value;
    match sample.name {
        "up" => host.reporting = value == 1.0,
        "gitops_live_commit_timestamp_seconds" if host.live_since.is_none_or(|t| value > t) => {
            host.live_since = Some(value);
            host.live_commit = sample.commit.clone();
            host.branch = sample.branch.clone().or(host.branch.take());
        }
        // The result of the live commit the timestamp chose (or of the one there is, without a timestamp).
        "gitops_live_commit_info" if host.live_commit.is_none() || host.live_commit == sample.commit => {
            host.live_commit = sample.commit.clone();
            host.live_result = sample.result.clone();
            host.branch = sample.branch.clone().or(host.branch.take());
        }
        "gitops_applied_commit_timestamp_seconds" if host.applied_at.is_none_or(|t| value > t) => {
            host.applied_at = Some(value);
            host.applied_commit = sample.commit.clone();
            host.branch = host.branch.take().or(sample.branch.clone());
        }
        "gitops_remote_commit_timestamp_seconds" if host.remote_commit_time.is_none_or(|t| value > t) => {
            host.remote_commit_time = Some(value);
            host.remote_commit = sample.commit.clone();
            host.branch = host.branch.take().or(sample.branch.clone());
        }
        "gitops_last_exit_code" => {
            host.last_result =
                Outcome::SYNC.iter().find(|o| f64::from(o.code()) == value).map(|o| o.label().to_string())
        }
        "gitops_commits_behind" => host.commits_behind = Some(value as u64),
        "gitops_last_run_timestamp_seconds" => host.last_run = Some(value),
        "gitops_last_success_timestamp_seconds" => host.last_success = (value > 0.0).then_some(value),
        "gitops_consecutive_failures" => host.consecutive_failures = value as u64,
        "gitops_reboot_pending_since_timestamp_seconds" => host.reboot_pending_since = Some(value),
        "gitops_deferred" => host.deferred = sample.kind.clone(),
        "gitops_last_error_info" => host.last_error = sample.error.clone(),
        "gitops_deferred_until_timestamp_seconds" => host.deferred_until = Some(value),
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

/// A label value as a PromQL string between double quotes.
fn string(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
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

    /// Instant queries at `time`, run side by side; the samples of each, in order.
    fn query_all(&self, queries: &[(&'static str, String)], time: f64) -> anyhow::Result<Vec<Vec<Sample>>> {
        std::thread::scope(|scope| {
            let running: Vec<_> =
                queries.iter().map(|(name, promql)| scope.spawn(move || self.query(name, promql, time))).collect();
            running
                .into_iter()
                .map(|query| query.join().unwrap_or_else(|_| Err(anyhow!("a Prometheus query thread panicked"))))
                .collect()
        })
    }

    /// An instant query evaluated at `time`; the samples of the vector it returns, as `name`.
    fn query(&self, name: &'static str, promql: &str, time: f64) -> anyhow::Result<Vec<Sample>> {
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
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .with_context(|| format!("reading the answer of Prometheus at {shown}"))?;
        parse(name, &body, status.as_u16()).map_err(|e| match e {
            Unusable::Refused { kind, message } => anyhow::Error::new(Refused { shown: shown.clone(), kind, message }),
            Unusable::NotTheApi(e) => anyhow!("Prometheus at {shown}: {e}"),
        })
    }
}

/// Prometheus answered a query with an error of its own (`errorType`, `error`).
#[derive(Debug)]
pub struct Refused {
    /// The Prometheus URL, password hidden.
    shown: String,
    /// `bad_data` (the query does not parse), `timeout`, `execution`, ….
    kind: String,
    /// Its message.
    message: String,
}

impl Refused {
    /// Whether Prometheus could not parse the query: it is the selector's fault, the rest is fixed.
    pub fn is_bad_query(&self) -> bool {
        self.kind == "bad_data"
    }

    /// The reason without what points into the query gitops built (`invalid parameter "query":`,
    /// `1:32: parse error:`): the selector as typed is shown next to it instead.
    pub fn reason(&self) -> String {
        let text = self.message.trim();
        let text = text.strip_prefix("invalid parameter \"query\":").unwrap_or(text).trim_start();
        let position = text.split_once(": ").filter(|(at, _)| {
            at.split(':').count() == 2 && at.split(':').all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        });
        let text = position.map_or(text, |(_, rest)| rest);
        text.strip_prefix("parse error: ").unwrap_or(text).to_string()
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prometheus at {}: query refused ({}: {})", self.shown, self.kind, self.message)
    }
}

impl std::error::Error for Refused {}

/// Why an answer gave no samples.
#[derive(Debug, PartialEq)]
enum Unusable {
    /// Prometheus said no: its `errorType` and `error`.
    Refused { kind: String, message: String },
    /// Not the API's JSON, or no result in it.
    NotTheApi(String),
}

/// The API's answer, borrowing from the body: a fleet's answer is megabytes, its labels mostly unread.
#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<Data<'a>>,
    #[serde(rename = "errorType", default, borrow)]
    error_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    error: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    result: Vec<Item<'a>>,
}

#[derive(serde::Deserialize)]
struct Item<'a> {
    #[serde(borrow)]
    metric: Labels<'a>,
    #[serde(borrow)]
    value: (f64, Cow<'a, str>),
}

/// The labels the fleet view reads (the others are skipped while parsing).
#[derive(serde::Deserialize)]
struct Labels<'a> {
    #[serde(default, borrow)]
    job: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    instance: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    host: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    commit: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    branch: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    result: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    error: Option<Cow<'a, str>>,
}

/// The samples of an instant-vector answer, or the error Prometheus gave.
fn parse(name: &'static str, body: &[u8], status: u16) -> Result<Vec<Sample>, Unusable> {
    let answer: Answer = serde_json::from_slice(body).map_err(|_| {
        Unusable::NotTheApi(format!(
            "answered HTTP {status} with something that is not its API's JSON; check --prometheus"
        ))
    })?;
    if answer.status != "success" {
        return Err(Unusable::Refused {
            kind: answer.error_type.as_deref().unwrap_or("error").to_string(),
            message: answer.error.as_deref().unwrap_or("no message").to_string(),
        });
    }
    let Some(data) = answer.data else { return Err(Unusable::NotTheApi("answer without data.result".into())) };
    Ok(data
        .result
        .into_iter()
        .filter_map(|item| {
            let label = |v: &Option<Cow<str>>| v.as_deref().filter(|v| !v.is_empty()).map(String::from);
            let m = &item.metric;
            Some(Sample {
                name,
                job: label(&m.job).unwrap_or_default(),
                instance: label(&m.instance).unwrap_or_default(),
                host: label(&m.host),
                version: label(&m.version),
                commit: label(&m.commit),
                branch: label(&m.branch),
                kind: label(&m.kind),
                result: label(&m.result),
                error: label(&m.error),
                value: item.value.1.parse().ok()?,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_matchers_with_or_without_braces() {
        let ok = |selector: &str| matchers("--selector", selector).unwrap();
        assert_eq!(ok("{job=\"node\"}"), "job=\"node\"");
        assert_eq!(ok(" job=\"node\", env!~'dev|test' ,"), "job=\"node\", env!~'dev|test'");
        assert_eq!(ok("{job=~`a{1,2}\\d`,env!=\"x\\\",y\"}"), "job=~`a{1,2}\\d`,env!=\"x\\\",y\"");
        assert_eq!(ok(""), "");
        assert_eq!(ok("{}"), "");
    }

    #[test]
    fn what_is_not_label_matchers_is_refused_as_typed_with_the_fix() {
        let refused = |selector: &str| matchers("--selector", selector).unwrap_err();
        assert_eq!(
            refused("{job=node}"),
            "--selector '{job=node}': the value of job is not quoted; write matchers like {job=\"node\"}"
        );
        assert_eq!(
            refused("up"),
            "--selector 'up': up alone is a metric name, not a label matcher; write matchers like {job=\"node\"}"
        );
        assert_eq!(
            refused("up{job=\"node\"}"),
            "--selector 'up{job=\"node\"}': up is a metric name; give the label matchers alone; write matchers like {job=\"node\"}"
        );
        assert!(refused("{job=\"node\"").contains("unbalanced braces"));
        assert!(refused("job=\"node\"}").contains("unbalanced braces"));
        assert!(refused("{__name__=\"x\"}").contains("the metric name is not for the selector to pick"));
        assert!(refused("{job=\"node}").contains("the value of job has no closing quote"));
        assert!(refused("{job=\"node\" env=\"prod\"}").contains("a comma is missing after the matcher of job"));
        assert!(refused("{job-name=\"x\"}").contains("\"job-name\" is not a label name"));
        assert!(refused("{job ~ \"x\"}").contains("job has no =, !=, =~ or !~"));
        assert!(refused("{1job=\"x\"}").contains("\"1job\" is not a label name"));
        // Sync's flag is named as sync's.
        assert!(
            matchers("--prometheus-selector", "{job=node}")
                .unwrap_err()
                .starts_with("--prometheus-selector '{job=node}': ")
        );
    }

    #[test]
    fn a_refusal_gives_its_reason_without_positions_in_our_query() {
        let refused = |kind: &str, message: &str| Refused {
            shown: "http://p".into(),
            kind: kind.into(),
            message: message.into(),
        };
        let parse = refused(
            "bad_data",
            "invalid parameter \"query\": 1:32: parse error: unexpected identifier \"node\" in label matching, expected string",
        );
        assert!(parse.is_bad_query());
        assert_eq!(parse.reason(), "unexpected identifier \"node\" in label matching, expected string");
        let regex =
            refused("bad_data", "invalid parameter \"query\": error parsing regexp: missing closing ): `^(?:()$`");
        assert_eq!(regex.reason(), "error parsing regexp: missing closing ): `^(?:()$`");
        assert!(!refused("timeout", "query timed out").is_bad_query());
        assert_eq!(
            refused("timeout", "query timed out").to_string(),
            "Prometheus at http://p: query refused (timeout: query timed out)"
        );
    }

    #[test]
    fn an_answer_becomes_samples_and_an_error_its_message() {
        let ok = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"gitops_info","instance":"a:9100","job":"node","host":"a","version":"1"},"value":[1.0,"1"]}]}}"#;
        let samples = parse("gitops_info", ok, 200).unwrap();
        assert_eq!(samples[0].host.as_deref(), Some("a"));
        assert_eq!(samples[0].value, 1.0);
        let refused = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert_eq!(
            parse("up", refused, 400).unwrap_err(),
            Unusable::Refused { kind: "bad_data".into(), message: "parse error".into() }
        );
        assert!(matches!(parse("up", b"<html>", 502), Err(Unusable::NotTheApi(e)) if e.contains("HTTP 502")));
    }

    #[test]
    fn every_name_queried_is_one_the_textfile_has() {
        for name in READ.iter().chain(&["gitops_info"]) {
            assert!(crate::metrics::NAMES.contains(name), "{name}");
        }
    }

    #[test]
    fn label_values_are_quoted_for_an_exact_matcher() {
        assert_eq!(string(r#"a"b\c"#), r#"a\"b\\c"#);
    }

    #[test]
    fn instances_are_escaped_for_a_regex_matcher() {
        assert_eq!(regex_escape("10.0.0.1:9100"), "10\\\\.0\\\\.0\\\\.1:9100");
    }

    fn sample(name: &'static str, commit: Option<&str>, value: f64) -> Sample {
        Sample {
            name,
            job: "node".into(),
            instance: "a:9100".into(),
            host: Some("web-1".into()),
            commit: commit.map(String::from),
            branch: commit.map(|_| "main".to_string()),
            value,
            ..Sample::default()
        }
    }

    #[test]
    fn samples_fill_their_host_and_the_newest_commit_wins() {
        let mut hosts = BTreeMap::new();
        host_of(&mut hosts, &sample("gitops_info", None, 1.0));
        fill(&mut hosts, &sample("gitops_live_commit_timestamp_seconds", Some("old"), 10.0));
        fill(&mut hosts, &sample("gitops_live_commit_timestamp_seconds", Some("new"), 20.0));
        fill(&mut hosts, &sample("gitops_live_commit_timestamp_seconds", Some("older"), 5.0));
        fill(&mut hosts, &sample("gitops_applied_commit_timestamp_seconds", Some("old"), 10.0));
        // The live commit's result, not that of an older live commit still in the lookback.
        let live = |commit: &str, result: &str| Sample {
            result: Some(result.into()),
            ..sample("gitops_live_commit_info", Some(commit), 1.0)
        };
        fill(&mut hosts, &live("old", "applied"));
        fill(&mut hosts, &live("new", "failed"));
        fill(&mut hosts, &sample("gitops_last_exit_code", None, 30.0));
        fill(&mut hosts, &sample("gitops_last_success_timestamp_seconds", None, 0.0));
        fill(&mut hosts, &sample("gitops_consecutive_failures", None, 2.0));
        let error = Sample {
            error: Some("entrypoint run.sh exited with status 1".into()),
            ..sample("gitops_last_error_info", None, 1.0)
        };
        fill(&mut hosts, &error);
        let mut host = hosts.values().next().unwrap().clone();
        version_one(&mut host);
        assert_eq!(host.host, "web-1");
        assert_eq!(host.live_commit.as_deref(), Some("new"));
        assert_eq!(host.live_result.as_deref(), Some("failed"));
        assert_eq!(host.live_since, Some(20.0));
        assert_eq!(host.applied_commit.as_deref(), Some("old"));
        assert_eq!(host.branch.as_deref(), Some("main"));
        assert_eq!(host.last_result.as_deref(), Some("apply-failed"));
        assert_eq!(host.last_error.as_deref(), Some("entrypoint run.sh exited with status 1"));
        assert_eq!(host.last_success, None);
        assert_eq!(host.consecutive_failures, 2);
    }

    #[test]
    fn a_host_on_metrics_version_1_is_live_on_its_applied_commit() {
        let mut hosts = BTreeMap::new();
        host_of(&mut hosts, &sample("gitops_info", None, 1.0));
        fill(&mut hosts, &sample("gitops_applied_commit_timestamp_seconds", Some("v1"), 10.0));
        let mut host = hosts.values().next().unwrap().clone();
        version_one(&mut host);
        assert_eq!((host.live_commit.as_deref(), host.live_since), (Some("v1"), Some(10.0)));
        assert_eq!(host.live_result, None, "version 1 did not say");
    }
}
