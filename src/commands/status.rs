//! `gitops status`: where this host stands, from the state directory, no network.

use anyhow::anyhow;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::StatusArgs;
use crate::commit_id::short;
use crate::last_run;
use crate::layout::Layout;
use crate::outcome::{Failure, Outcome};
use crate::parse::parse_duration;
use crate::printable::printable;
use crate::state;
use crate::suspend;

/// Print where this host stands; exit 0 when healthy, 1 when the last run failed or success is too old.
pub fn status(args: StatusArgs) -> Result<Outcome, Failure> {
    let max_age = parse_duration(&args.max_age)
        .map_err(|e| Failure::usage(anyhow!("--max-age {:?}: {e}; use e.g. 15m or 2h", args.max_age)))?;
    let layout = Layout::existing(args.state_dir)?;
    let state = state::load(&layout.state_file())?;
    let record = last_run::load(&layout);
    let now = OffsetDateTime::now_utc();
    let age = |at: &Option<String>| {
        at.as_deref().and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok()).map(|t| (now - t).whole_seconds().max(0))
    };

    let applied_commit = state.applied_commit.clone();
    let (subject, author) = applied_commit.as_deref().map(|c| describe(&layout, c)).unwrap_or((None, None));
    let live = crate::live::of(&state, crate::checkout::live_commit(&layout).as_deref());
    let (live_subject, live_author) = match &live {
        Some(live) if Some(&live.commit) == applied_commit.as_ref() => (subject.clone(), author.clone()),
        Some(live) => describe(&layout, &live.commit),
        None => (None, None),
    };
    let mut problems = Vec::new();
    let now_unix = crate::clock::now_unix();
    // An unreadable hold is shown as a problem: sync stops on it too.
    let suspension = suspend::load(&layout).map_err(|e| problems.push(format!("{e:#}"))).ok().flatten();
    let suspension = suspension.filter(|hold| !hold.expired(now_unix));

    problems.extend(run_problems(&record, applied_commit.is_some(), live.as_ref()));
    if let Some(seconds) = age(&record.last_success_at)
        && seconds > max_age.as_secs() as i64
    {
        problems.push(format!(
            "last success {}, more than --max-age {}",
            crate::clock::relative(seconds),
            args.max_age
        ));
    }
    let retry =
        state.last_failure().map(|(commit, attempts)| json!({"commit": commit, "consecutive_failures": attempts}));
    let last_run = record.last_run.as_ref().map(|run| {
        let mut run = serde_json::to_value(run).unwrap_or_default();
        if let Some(map) = run.as_object_mut() {
            map.remove("log_tail");
        }
        run
    });
    let doc = json!({
        "version": 1,
        "state_dir": layout.root,
        "repository": record.last_run.as_ref().map(|r| r.repository.clone()),
        "branch": record.last_run.as_ref().and_then(|r| r.branch.clone()),
        "live": live.as_ref().map(|live| json!({
            "commit": live.commit,
            "subject": live_subject,
            "author": live_author,
            "result": live.result,
            "since": live.since,
            "age_seconds": age(&live.since),
            "error": live.error,
        })),
        "applied": applied_commit.as_ref().map(|commit| json!({
            "commit": commit,
            "subject": subject,
            "author": author,
            "applied_at": state.applied_at,
            "age_seconds": age(&state.applied_at),
            "deployed_from": state.deployed_from,
            "testing_branch": state.testing_base.as_ref().and(state.deployed_from.as_ref()),
            "reconciled_at": state.reconciled_at,
        })),
        "rollback": state.rollback.as_ref().map(|rollback| json!({
            "from": rollback.from,
            "subject": describe(&layout, &rollback.from).0,
            "to": rollback.to,
            "why": rollback.why,
            "started_at": rollback.started_at,
            "finished_at": rollback.finished_at,
            "succeeded": rollback.succeeded,
            "attempts": rollback.attempts,
        })),
        "suspended": suspension.as_ref().map(|hold| json!({
            "since": hold.since,
            "by": hold.by,
            "reason": hold.reason,
            "until": hold.until,
            "summary": hold.describe(now_unix),
        })),
        "last_run": last_run,
        "last_success_at": record.last_success_at,
        "consecutive_failures": record.consecutive_failures,
        "apply_failures_total": record.apply_failures_total,
        "pending_retry": retry,
        "verification": state.verification,
        "last_fetch": state.fetch.as_ref().map(|fetch| json!({
            "served_by": fetch.served_by,
            "fetched_at": fetch.fetched_at,
            "age_seconds": age(&fetch.fetched_at),
        })),
        "log": state.last_attempt.as_ref().map(|a| a.log.clone()),
        "next_run": next_timer_run(),
        "healthy": problems.is_empty(),
        "problems": problems,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print_human(&doc);
    }
    Ok(if problems.is_empty() { Outcome::Success } else { Outcome::Runtime })
}

/// What the last run and the live revision say is wrong with this host.
fn run_problems(record: &last_run::RunRecord, applied: bool, live: Option<&crate::live::Live>) -> Vec<String> {
    let mut problems = Vec::new();
    match &record.last_run {
        None if !applied => problems.push("no run recorded yet".to_string()),
        Some(run) if run.result.is_failure() => problems.push(format!(
            "last run failed: {} (exit {}){}",
            run.result,
            run.exit_code,
            run.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
        )),
        _ => {}
    }
    let deferred = record.last_run.as_ref().and_then(|run| run.deferred.as_ref());
    if let Some(held) = deferred.filter(|d| crate::notify::MISCONFIGURED.contains(&d.kind.as_str())) {
        problems.push(format!("held back, and it cannot end by itself ({}): {}", held.kind, held.message));
    }
    if let Some(live) = live.filter(|l| l.result == crate::live::LiveResult::Unfinished) {
        problems.push(format!(
            "{} went live but no run recorded how its entrypoint ended (a run was killed?); the next sync applies it again",
            short(&live.commit)
        ));
    }
    problems
}

fn print_human(doc: &serde_json::Value) {
    // Subjects, authors and errors come from the repository: never print them raw to a terminal.
    let text = |v: &serde_json::Value| v.as_str().map(|s| printable(s).into_owned()).unwrap_or_else(|| "-".into());
    let now = crate::clock::now_unix();
    let when = |v: &serde_json::Value| match v.as_str() {
        Some(at) => crate::clock::for_humans(at, now),
        None => "-".into(),
    };
    let commit = |v: &serde_json::Value| {
        format!("{} \"{}\" by {}", short(&text(&v["commit"])), text(&v["subject"]), text(&v["author"]))
    };
    println!("repository:   {} (branch {})", text(&doc["repository"]), text(&doc["branch"]));
    let (live, applied) = (&doc["live"], &doc["applied"]);
    match live["result"].as_str() {
        None => println!("live:         nothing yet"),
        Some("applied") => println!("live:         {}, live since {}", commit(live), when(&live["since"])),
        Some(result) => println!(
            "live:         {} — entrypoint {}{}, live since {}",
            commit(live),
            if result == "failed" { "FAILED" } else { "never finished" },
            live["error"].as_str().map(|e| format!(": {}", printable(e))).unwrap_or_default(),
            when(&live["since"])
        ),
    }
    match applied.as_object() {
        Some(_) if applied["commit"] == live["commit"] => {
            println!("applied:      the live commit, {}", when(&applied["applied_at"]))
        }
        Some(_) => println!("applied:      {}, {}", commit(applied), when(&applied["applied_at"])),
        None => println!("applied:      nothing yet"),
    }
    if let Some(rollback) = doc["rollback"].as_object() {
        let (from, to) = (text(&rollback["from"]), text(&rollback["to"]));
        let (from, to) = (short(&from), short(&to));
        let subject = text(&rollback["subject"]);
        match (rollback["succeeded"].as_bool(), rollback["finished_at"].is_string()) {
            (Some(true), _) => println!(
                "rolled back:  {from} \"{subject}\": {}; live: {to} ({}); {from} is not retried until a newer commit or --retry",
                text(&rollback["why"]),
                when(&rollback["finished_at"])
            ),
            (_, true) => println!("rollback:     FAILED from {from} \"{subject}\" to {to}: {}", text(&rollback["why"])),
            _ => println!("rollback:     from {from} \"{subject}\" to {to}, unfinished (the next run resumes it)"),
        }
    }
    if let Some(testing) = applied["testing_branch"].as_str() {
        println!("deployed from: {} (testing branch)", printable(testing));
    }
    if applied["reconciled_at"].is_string() {
        println!("reconciled:   {}", when(&applied["reconciled_at"]));
    }
    if let Some(hold) = doc["suspended"].as_object() {
        println!("suspended:    {}", text(&hold["summary"]).trim_start_matches("suspended "));
    }
    if let Some(run) = doc["last_run"].as_object() {
        println!(
            "last run:     {}, {} (exit {}) in {:.1}s",
            when(&run["finished_at"]),
            text(&run["result"]),
            run["exit_code"],
            run["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0
        );
    }
    if let Some(held) = doc["last_run"]["deferred"].as_object() {
        println!(
            "held back:    {} {} ({})",
            short(&text(&doc["last_run"]["commit"])),
            text(&held["message"]),
            text(&held["kind"])
        );
    }
    println!("last success: {}", when(&doc["last_success_at"]));
    if let Some(run) = doc["last_run"].as_object() {
        match (run.get("served_by").and_then(|v| v.as_str()), run.get("probe").and_then(|v| v.as_str())) {
            (Some(remote), _) => println!("served by:    {}", printable(remote)),
            (None, Some("not-modified")) => println!("served by:    the change probe (304: no Git server contacted)"),
            _ => {}
        }
    }
    if let Some(fetch) = doc["last_fetch"].as_object().filter(|f| !f["fetched_at"].is_null()) {
        println!("last fetch:   {} from {}", when(&fetch["fetched_at"]), text(&fetch["served_by"]));
    }
    if let Some(retry) = doc["pending_retry"].as_object() {
        println!(
            "retrying:     {} failed {} time(s) in a row",
            short(&text(&retry["commit"])),
            retry["consecutive_failures"]
        );
    }
    if let Some(v) = doc["verification"].as_object() {
        match v["result"].as_str() {
            Some("verified") => {
                println!("verification: verified, signed by {} ({})", text(&v["principal"]), text(&v["fingerprint"]))
            }
            _ => println!("verification: REJECTED {}: {}", text(&v["object"]), text(&v["reason"])),
        }
    }
    println!("log:          {}", text(&doc["log"]));
    if let Some(next) = doc["next_run"].as_str() {
        println!("next run:     {next}");
    }
    match doc["problems"].as_array().filter(|p| !p.is_empty()) {
        None => println!("health:       OK"),
        Some(problems) => {
            for problem in problems {
                println!("health:       UNHEALTHY: {}", text(problem));
            }
        }
    }
}

/// The applied commit's subject and author, from the cache repository.
fn describe(layout: &Layout, commit: &str) -> (Option<String>, Option<String>) {
    let Ok(repo) = gix::open_opts(layout.cache(), gix::open::Options::isolated()) else { return (None, None) };
    let Ok(id) = gix::ObjectId::from_hex(commit.as_bytes()) else { return (None, None) };
    let Ok(commit) = repo.find_commit(id) else { return (None, None) };
    (
        commit.message().ok().map(|m| m.summary().to_string()),
        commit.author().ok().map(|a| format!("{} <{}>", a.name, a.email)),
    )
}

/// When systemd will next start gitops.service, if systemd runs this host.
fn next_timer_run() -> Option<String> {
    if !std::path::Path::new("/run/systemd/system").exists() {
        return None;
    }
    let out = std::process::Command::new("systemctl")
        .args(["show", "gitops.timer", "--property=NextElapseUSecRealtime", "--value"])
        .output()
        .ok()?;
    let value = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !value.is_empty() && value != "n/a").then_some(value)
}
