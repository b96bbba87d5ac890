//! Safe rollouts decided in Git: `.gitops/rollout` in the commit being considered says who takes it at
//! once (canaries), over how long everyone else follows (a wave spread by a hash of host and commit),
//! whether they first wait for the canaries to be healthy on it (a Prometheus gate), or whether nobody
//! moves at all (pause). Each host decides alone; Prometheus is the only shared signal.
//!
//! Parsing and the decision are plain functions; the gate's queries are in [`gate`], the I/O around
//! them in `sync`.

pub mod consider;
pub mod gate;

use std::time::Duration;

use crate::notify::MISCONFIGURED;
use crate::outcome::Outcome;
use crate::parse::parse_duration;

/// The policy file, relative to the config root (next to `.gitops/reboot`).
pub const POLICY_FILE: &str = ".gitops/rollout";

/// A validated `.gitops/rollout`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Host names that take a new commit at once.
    pub canary_hosts: Vec<String>,
    /// Tags (`--tags`) whose hosts take a new commit at once.
    pub canary_tags: Vec<String>,
    /// Every other host takes the commit within this long.
    pub window: Option<Duration>,
    /// Wait for the canaries' health in Prometheus before the window starts.
    pub gate: Option<Gate>,
    /// Nobody moves to this commit.
    pub pause: bool,
    /// `rollback=`: go back to the commit before when this one fails (a host's `--rollback` wins).
    pub rollback: Option<bool>,
}

/// The Prometheus gate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gate {
    /// Canaries that must be live and healthy on the commit; None: every canary seen in the last 15 minutes.
    pub min_canaries: Option<u32>,
}

/// Parse `.gitops/rollout`: `KEY=VALUE` lines, `#` comments. An error names the line and the fix.
pub fn parse(text: &str) -> Result<Policy, String> {
    let (policy, problems) = parse_all(text);
    match problems.into_iter().next() {
        Some(first) => Err(first.to_string()),
        None => Ok(policy),
    }
}

/// One thing wrong in `.gitops/rollout`: the line it is on and what is wrong, with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The line, counted from 1.
    pub line: usize,
    /// What is wrong and how to fix it.
    pub why: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{POLICY_FILE} line {}: {}", self.line, self.why)
    }
}

/// Parse every line and find every problem, in line order (a host stops at the first: `parse`), so that
/// `gitops check` reports them all; the policy is what the good lines say.
pub fn parse_all(text: &str) -> (Policy, Vec<Problem>) {
    let mut reading = Reading::default();
    let mut problems = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Err(why) = reading.line(n + 1, line) {
            problems.push(Problem { line: n + 1, why });
        }
    }
    let Reading { mut policy, gate, min_canaries, .. } = reading;
    let canaries = policy.canary_hosts.len() + policy.canary_tags.len();
    if let Some(line) = gate {
        if canaries == 0 {
            let why = "gate=prometheus needs canaries to wait for; add canary=".to_string();
            problems.push(Problem { line, why });
        }
        policy.gate = Some(Gate { min_canaries: min_canaries.as_ref().map(|(n, _, _)| *n) });
    } else if let Some((_, line, text)) = min_canaries {
        problems.push(Problem { line, why: format!("{text:?} only means something with gate=prometheus") });
    }
    (policy, problems)
}

/// The policy as its lines are read: what they said so far, and what the checks after the last line need.
#[derive(Default)]
struct Reading {
    policy: Policy,
    /// Keys set so far: each may be set once.
    seen: Vec<String>,
    /// The line of `gate=prometheus`.
    gate: Option<usize>,
    /// `min_canaries`: its value, line and text.
    min_canaries: Option<(u32, usize, String)>,
}

impl Reading {
    /// Take line `n` (trimmed, not blank, not a comment) into the policy, or say what is wrong with it.
    fn line(&mut self, n: usize, line: &str) -> Result<(), String> {
        let policy = &mut self.policy;
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "{line:?} is not KEY=VALUE (keys: canary, window, gate, min_canaries, pause, rollback)"
            ));
        };
        let (key, value) = (key.trim(), value.trim().trim_matches('"'));
        if self.seen.iter().any(|k| k == key) {
            return Err(format!("{key} is set twice; keep one line"));
        }
        self.seen.push(key.to_string());
        match key {
            "canary" => {
                for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                    match item.strip_prefix("tag:") {
                        Some("") => return Err("tag: without a name; write tag:NAME".into()),
                        Some(tag) => policy.canary_tags.push(tag.to_string()),
                        None if crate::inventory::is_plain_name(item) => policy.canary_hosts.push(item.to_string()),
                        None => return Err(format!("canary {item:?} is neither a host name nor tag:NAME")),
                    }
                }
            }
            "window" => {
                let window =
                    parse_duration(value).map_err(|e| format!("window {value:?}: {e}; use e.g. 30m, 2h or 1d"))?;
                policy.window = Some(window);
            }
            "gate" if value == "prometheus" => self.gate = Some(n),
            "gate" if value == "none" || value.is_empty() => {}
            "gate" => return Err(format!("gate {value:?}: the only gate is prometheus (or none)")),
            "min_canaries" => match value.parse::<u32>() {
                Ok(count) if count > 0 => self.min_canaries = Some((count, n, line.to_string())),
                _ => return Err(format!("min_canaries {value:?}: give a whole number of canaries, 1 or more")),
            },
            "pause" => {
                policy.pause = match value {
                    "yes" | "true" | "1" => true,
                    "no" | "false" | "0" | "" => false,
                    _ => return Err(format!("pause {value:?}: use yes or no")),
                }
            }
            "rollback" => {
                policy.rollback = match value {
                    "yes" | "true" | "1" => Some(true),
                    "no" | "false" | "0" => Some(false),
                    _ => return Err(format!("rollback {value:?}: use yes or no")),
                }
            }
            _ => {
                return Err(format!(
                    "unknown key {key:?}; the keys are canary, window, gate, min_canaries, pause, rollback"
                ));
            }
        }
        Ok(())
    }
}

impl Policy {
    /// Whether the host named `host`, with `tags`, is a canary.
    pub fn is_canary(&self, host: &str, tags: &[String]) -> bool {
        self.canary_hosts.iter().any(|h| h == host) || self.canary_tags.iter().any(|t| tags.contains(t))
    }
}

/// This host's place in the wave for `commit`: a number in [0, 1) from a hash of (host, commit), stable
/// for the pair, unrelated between commits, evenly spread over a fleet.
pub fn slot(host: &str, commit: &str) -> f64 {
    use sha2::{Digest, Sha256};
    let digest =
        Sha256::new().chain_update(host.as_bytes()).chain_update([0]).chain_update(commit.as_bytes()).finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits: exactly representable, and strictly below 1.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// What the gate says, as `gate::check` read it from Prometheus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateState {
    /// Enough canaries are live and healthy on the commit, and none fails on it.
    Open,
    /// Not yet: what is missing, for the log ("1 of 2 canaries live on …").
    Waiting(String),
    /// A canary fails on the commit: the rollout is halted until a new commit.
    Halted(String),
    /// Prometheus could not be asked: hold (fail closed).
    Unknown(String),
    /// The gate can never open as configured: the deferral kind (one of `notify::MISCONFIGURED`) and why.
    Misconfigured(&'static str, String),
}

/// Why a host does not move to the commit now.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    /// `pause`, `gate` (waiting for the canaries), `halted`, `wave`, or a mistake (`notify::MISCONFIGURED`:
    /// `gate-unconfigured`, `canary-unknown`, `gate-unreachable`): the metrics label (`suspend` comes from
    /// `gitops suspend`).
    pub kind: &'static str,
    /// The log line: why, and when it will go if that is known.
    pub message: String,
    /// When it will go (Unix seconds), when that is known.
    pub until: Option<i64>,
}

impl Hold {
    /// How a run held so ends when the hold is not the plan but a mistake that will not end by itself:
    /// a configuration error (exit 2: `gate=prometheus` without `--prometheus`, canaries that match no
    /// reporting host) or a gate that cannot be asked (exit 1: Prometheus unreachable). None: the plan.
    pub fn mistake(&self) -> Option<Outcome> {
        match self.kind {
            "gate-unreachable" => Some(Outcome::Runtime),
            kind if MISCONFIGURED.contains(&kind) => Some(Outcome::Usage),
            _ => None,
        }
    }
}

/// What the policy says for this host about `commit` at `now`. `window_start` is when the wave started
/// for this host (first seen, or when the gate opened); `gate` is the gate's state (None without a gate).
pub fn decide(
    policy: &Policy,
    canary: bool,
    first_deploy: bool,
    slot: f64,
    window_start: i64,
    gate: Option<&GateState>,
    now: i64,
) -> Result<(), Hold> {
    if policy.pause {
        let message =
            format!("paused by {POLICY_FILE} (pause=yes): no host moves to this commit until a later one lifts it");
        return Err(Hold { kind: "pause", message, until: None });
    }
    if canary {
        return Ok(());
    }
    match gate {
        None | Some(GateState::Open) => {}
        Some(GateState::Waiting(why)) => {
            return Err(Hold { kind: "gate", message: format!("waiting for the canaries: {why}"), until: None });
        }
        Some(GateState::Halted(why)) => {
            return Err(Hold { kind: "halted", message: format!("rollout halted: {why}"), until: None });
        }
        Some(GateState::Unknown(why)) => {
            return Err(Hold {
                kind: "gate-unreachable",
                message: format!("holding: the gate cannot be checked ({why})"),
                until: None,
            });
        }
        Some(GateState::Misconfigured(kind, why)) => {
            return Err(Hold { kind, message: format!("holding, and the gate cannot open: {why}"), until: None });
        }
    }
    // A host with nothing deployed yet has nothing to protect: it does not wait for its slot.
    let Some(window) = policy.window.filter(|_| !first_deploy) else { return Ok(()) };
    let go = window_start + (window.as_secs_f64() * slot) as i64;
    if now >= go {
        return Ok(());
    }
    let at = crate::clock::rfc3339(go).map(|t| t.replace('T', " ").trim_end_matches('Z').to_string() + " UTC");
    let message = format!(
        "waiting for the wave: {:.0}% of {}, at {}",
        slot * 100.0,
        crate::parse::format_duration(window),
        at.unwrap_or_else(|| go.to_string())
    );
    Err(Hold { kind: "wave", message, until: Some(go) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_policy_parses() {
        let policy = parse(
            "# staged\ncanary=web-1, tag:canary\nwindow=2h\ngate=prometheus\nmin_canaries=2\npause=no\nrollback=yes\n",
        )
        .unwrap();
        assert_eq!(policy.rollback, Some(true));
        assert_eq!(parse("rollback=no\n").unwrap().rollback, Some(false));
        assert_eq!(policy.canary_hosts, ["web-1"]);
        assert_eq!(policy.canary_tags, ["canary"]);
        assert_eq!(policy.window, Some(Duration::from_secs(7200)));
        assert_eq!(policy.gate, Some(Gate { min_canaries: Some(2) }));
        assert!(!policy.pause);
        assert!(policy.is_canary("web-1", &[]));
        assert!(policy.is_canary("db-1", &["canary".into()]));
        assert!(!policy.is_canary("db-1", &["eu".into()]));
    }

    #[test]
    fn bad_policies_name_the_line() {
        for (text, says) in [
            ("canary=web-1\nwindow=soon\n", "line 2: window \"soon\""),
            ("window=1h\nwindow=2h\n", "line 2: window is set twice"),
            ("speed=fast\n", "line 1: unknown key \"speed\""),
            ("gate=prometheus\n", "line 1: gate=prometheus needs canaries"),
            ("canary=a\ngate=consul\n", "line 2: gate \"consul\""),
            ("canary=a\nmin_canaries=2\n", "only means something with gate=prometheus"),
            ("canary=a\ngate=prometheus\nmin_canaries=0\n", "line 3: min_canaries \"0\""),
            ("pause=maybe\n", "line 1: pause \"maybe\""),
            ("rollback=sometimes\n", "line 1: rollback \"sometimes\": use yes or no"),
            ("canary=tag:\n", "line 1: tag: without a name"),
            ("canary=../x\n", "neither a host name nor tag:NAME"),
            ("just words\n", "line 1: \"just words\" is not KEY=VALUE"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with(".gitops/rollout") && err.contains(says), "{text:?}: {err}");
        }
    }

    #[test]
    fn parse_all_finds_every_problem_and_parse_the_first_of_them() {
        let text = "speed=fast\ncanary=web-1\nwindow=90\nwindow=2h\nmin_canaries=2\n";
        let (policy, problems) = parse_all(text);
        let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [1, 3, 4, 5], "{problems:?}");
        assert!(problems[1].why.contains("90 has no unit: did you mean 90s, 90m or 90h?"), "{}", problems[1].why);
        assert!(problems[3].why.contains("only means something with gate=prometheus"));
        assert_eq!(policy.canary_hosts, ["web-1"], "the good lines still count");
        assert_eq!(parse(text).unwrap_err(), problems[0].to_string());
        assert_eq!(parse_all("canary=a\nwindow=1h\n").1, []);
    }

    #[test]
    fn slots_are_stable_per_host_and_commit_and_cover_the_window_evenly() {
        assert_eq!(slot("web-1", "abc"), slot("web-1", "abc"));
        assert_ne!(slot("web-1", "abc"), slot("web-1", "abd"));
        let slots: Vec<f64> = (0..10_000).map(|i| slot(&format!("host-{i}"), "c0ffee")).collect();
        assert!(slots.iter().all(|s| (0.0..1.0).contains(s)));
        // Every tenth of the window gets about a tenth of the fleet.
        for decile in 0..10 {
            let n = slots.iter().filter(|s| (**s * 10.0) as usize == decile).count();
            assert!((850..1150).contains(&n), "decile {decile}: {n}");
        }
    }

    #[test]
    fn pause_holds_everyone_canaries_go_the_gate_and_the_wave_hold_the_rest() {
        let policy = parse("canary=c\nwindow=1h\ngate=prometheus\n").unwrap();
        let open = GateState::Open;
        assert!(decide(&policy, true, false, 0.5, 0, Some(&GateState::Waiting("0 of 1".into())), 0).is_ok());
        let held = decide(&policy, false, false, 0.5, 0, Some(&GateState::Halted("c fails".into())), 0).unwrap_err();
        assert_eq!(held.kind, "halted");
        let held = decide(&policy, false, false, 0.5, 0, Some(&GateState::Unknown("refused".into())), 0).unwrap_err();
        assert_eq!((held.kind, held.mistake()), ("gate-unreachable", Some(Outcome::Runtime)));
        let wrong = GateState::Misconfigured("canary-unknown", "no host named c reports".into());
        let held = decide(&policy, false, false, 0.5, 0, Some(&wrong), 0).unwrap_err();
        assert_eq!(held.kind, "canary-unknown");
        assert!(crate::notify::MISCONFIGURED.contains(&held.kind));
        let held = decide(&policy, false, false, 0.37, 1_000, Some(&open), 1_000).unwrap_err();
        assert_eq!((held.kind, held.until), ("wave", Some(1_000 + 1332)));
        assert!(
            held.message.starts_with("waiting for the wave: 37% of 1h, at 1970-01-01 00:38:52 UTC"),
            "{}",
            held.message
        );
        assert!(decide(&policy, false, false, 0.37, 1_000, Some(&open), 2_332).is_ok());
        assert!(decide(&policy, false, true, 0.37, 1_000, Some(&open), 1_000).is_ok(), "a first deploy does not wait");
        let paused = Policy { pause: true, ..policy };
        assert_eq!(decide(&paused, true, false, 0.0, 0, None, 0).unwrap_err().kind, "pause");
    }
}
