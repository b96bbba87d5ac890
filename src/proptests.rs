//! Property tests: every parser of outside input answers arbitrary input with a value or an error, never a panic.

use proptest::prelude::*;

use crate::config::{parse_duration, parse_env_file, parse_size};
use crate::notify::Target;
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
    fn state_json_never_panics_and_round_trips(text in "\\PC{0,300}", commit in "[0-9a-f]{40}", history in proptest::collection::vec("[0-9a-f]{40}", 0..5)) {
        let _ = serde_json::from_str::<State>(&text);
        let state = State { applied_commit: Some(commit), applied_history: history, ..State::default() };
        let back: State = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        prop_assert_eq!(back, state);
    }
}
