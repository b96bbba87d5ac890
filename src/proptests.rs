//! Property tests: every parser of outside input answers arbitrary input with a value or an error, never a panic.

use proptest::prelude::*;

use crate::config::parse_env_file;
use crate::notify::Target;
use crate::parse::{parse_duration, parse_size};
use crate::state::State;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn env_file_never_panics_and_keeps_simple_pairs(text in "\\PC{0,200}", key in "[A-Z_][A-Z0-9_]{0,12}", value in "[a-zA-Z0-9/:._-]{0,20}") {
        let _ = parse_env_file(&text);
        let parsed = parse_env_file(&format!("# comment\n{key}={value}\n")).unwrap();
        prop_assert_eq!(parsed, vec![(key, value)]);
    }

    #[test]
    fn durations_and_sizes_never_panic(text in "\\PC{0,30}", n in 1u64..100_000) {
        let _ = parse_duration(&text);
        let _ = parse_size(&text);
        prop_assert_eq!(parse_duration(&format!("{n}s")).unwrap().as_secs(), n);
        prop_assert_eq!(parse_size(&format!("{n}K")).unwrap(), n * 1024);
    }

    #[test]
    fn allowed_signers_never_panic(text in "\\PC{0,300}", principal in "[a-z@.]{1,20}", opts in "[a-z=\",-]{0,40}") {
        let _ = crate::signers::parse(&text);
        let _ = crate::signers::parse(&format!("{principal} {opts} ssh-ed25519 AAAA\n"));
        let _ = crate::signers::parse_time(&text);
    }

    #[test]
    fn notification_targets_never_panic(text in "\\PC{0,100}") {
        let _ = Target::parse(&text);
        let _ = crate::redact::url(&text);
    }

    #[test]
    fn fleet_parsers_never_panic(text in "\\PC{0,80}") {
        let _ = crate::reboot::window::Window::parse(&text);
        let _ = crate::reboot::parse_repo_request(&text);
        let _ = crate::inventory::parse_tags(&text);
        let _ = crate::inventory::host_names(&text);
        let request = crate::reboot::Request {
            source: crate::reboot::Source::Repo,
            not_before: text.clone(),
            commit: Some(text.clone()),
            reason: Some(text.clone()),
        };
        let _ = request.to_string();
    }

    #[test]
    fn a_window_contains_its_own_start(day in 0u8..7, start in 0u16..1440, length in 1u16..1440) {
        let days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        let end = (start + length) % 1440;
        let (from, to) = (format!("{:02}:{:02}", start / 60, start % 60), format!("{:02}:{:02}", end / 60, end % 60));
        let text = format!("{} {from}-{to}", days[day as usize]);
        let window = crate::reboot::window::Window::parse(&text).unwrap();
        prop_assert!(window.contains(crate::reboot::window::LocalTime { weekday: day, minute: start }), "{}", text);
        prop_assert!(!window.contains(crate::reboot::window::LocalTime { weekday: (day + 1) % 7, minute: start }), "{}", text);
    }

    #[test]
    fn state_json_never_panics_and_round_trips(text in "\\PC{0,300}", commit in "[0-9a-f]{40}", history in proptest::collection::vec("[0-9a-f]{40}", 0..5)) {
        let _ = serde_json::from_str::<State>(&text);
        let state = State { applied_commit: Some(commit), applied_history: history, ..State::default() };
        let back: State = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        prop_assert_eq!(back, state);
    }

    #[test]
    fn webhook_request_heads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), path in "/[a-z/]{0,20}", length in 0u64..5_000_000) {
        let _ = crate::webhook::http::parse_head(&bytes);
        let request = format!("POST {path}?x=1 HTTP/1.1\r\nContent-Length: {length}\r\nX-A: b\r\n\r\nbody");
        let head = crate::webhook::http::parse_head(request.as_bytes()).unwrap().unwrap();
        prop_assert_eq!(&head.path, &path);
        let announced = crate::webhook::http::body_length(&head, 1 << 20);
        prop_assert_eq!(announced.is_ok(), length <= 1 << 20);
        if let Ok(head) = crate::webhook::http::parse_head(&bytes) && let Some(head) = head {
            let _ = crate::webhook::http::body_length(&head, 1 << 20);
        }
    }

    #[test]
    fn webhook_payloads_and_signatures_never_panic(text in "\\PC{0,200}", git_ref in "\\PC{0,40}", value in "\\PC{0,80}", event in "\\PC{0,20}") {
        use crate::webhook::event::{Forge, classify};
        let secret = crate::webhook::auth::Secret::new(b"0123456789abcdef".to_vec());
        for header in ["x-hub-signature-256", "x-gitea-signature", "x-gitlab-token", "x-gitops-signature"] {
            let headers = vec![(header.to_string(), value.clone())];
            prop_assert!(crate::webhook::auth::authenticate(&secret, &headers, text.as_bytes()).is_err());
        }
        let payloads = [
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
            serde_json::json!({"ref": git_ref, "after": value, "repository": {"default_branch": text}}),
        ];
        for payload in &payloads {
            for forge in [Forge::GitHub, Forge::Gitea, Forge::GitLab, Forge::Generic] {
                let _ = classify(forge, &event, payload, None);
                let _ = classify(forge, &event, payload, Some("main"));
            }
        }
    }
}
