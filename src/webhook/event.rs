//! What a forge delivery means for this host: a ping, a push that should trigger a sync, or something to ignore.
//!
//! Pure: headers and the parsed payload in, a verdict out; table-tested below.

use serde_json::Value;

/// The forge a delivery came from, told by its event header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    /// GitHub (`X-GitHub-Event`).
    GitHub,
    /// Gitea, Forgejo or Gogs (`X-Gitea-Event`, `X-Forgejo-Event`, `X-Gogs-Event`).
    Gitea,
    /// GitLab (`X-Gitlab-Event`).
    GitLab,
    /// Anything else: a script or CI job posting a push-shaped payload (`X-Gitops-Event` optional).
    Generic,
}

impl Forge {
    /// Lower-case name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::Gitea => "gitea",
            Forge::GitLab => "gitlab",
            Forge::Generic => "generic",
        }
    }
}

/// Event headers, most specific first: Gitea and Forgejo also send `X-GitHub-Event` for compatibility.
const EVENT_HEADERS: [(&str, Forge); 6] = [
    ("x-forgejo-event", Forge::Gitea),
    ("x-gitea-event", Forge::Gitea),
    ("x-gogs-event", Forge::Gitea),
    ("x-gitlab-event", Forge::GitLab),
    ("x-github-event", Forge::GitHub),
    ("x-gitops-event", Forge::Generic),
];

/// The forge and event name of a delivery; without an event header it is a generic push.
pub fn event_of<'a>(header: impl Fn(&str) -> Option<&'a str>) -> (Forge, &'a str) {
    EVENT_HEADERS
        .iter()
        .find_map(|(name, forge)| header(name).map(|event| (*forge, event.trim())))
        .unwrap_or((Forge::Generic, "push"))
}

/// What to do with an authenticated delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// GitHub's `ping` when a webhook is created: answer 200, trigger nothing.
    Ping,
    /// A push to the deployed branch: trigger a sync.
    Push {
        /// Branch name (without `refs/heads/`).
        branch: String,
        /// The pushed commit (`after`), for logs only: the sync fetches the branch tip itself.
        commit: Option<String>,
    },
    /// Anything else: answer 202 "ignored" with this reason, trigger nothing.
    Ignored(String),
}

/// Decide what a delivery means. `Err` is a push payload without the fields a push has (answered 400).
///
/// The branch that triggers is `deployed_branch` (`--branch`, `GITOPS_BRANCH`) when set. When it
/// is not, `gitops sync` deploys the remote's default branch, so the default branch named in the
/// payload (`repository.default_branch`, GitLab's `project.default_branch`) is used; a payload
/// naming none triggers on any branch, since a sync with nothing new costs one ref advertisement.
pub fn classify(forge: Forge, event: &str, payload: &Value, deployed_branch: Option<&str>) -> Result<Verdict, String> {
    let is_push = match forge {
        Forge::GitHub | Forge::Gitea | Forge::Generic => event.eq_ignore_ascii_case("push"),
        // System hooks carry every event kind under one header; the payload says which.
        Forge::GitLab => {
            event == "Push Hook" || (event == "System Hook" && payload["object_kind"].as_str() == Some("push"))
        }
    };
    if forge == Forge::GitHub && event == "ping" {
        return Ok(Verdict::Ping);
    }
    if !is_push {
        return Ok(Verdict::Ignored(format!("{} event {event:?} is not a push", forge.name())));
    }
    let Some(git_ref) = payload["ref"].as_str() else {
        return Err("push payload has no \"ref\" string".into());
    };
    let Some(branch) = git_ref.strip_prefix("refs/heads/") else {
        return Ok(Verdict::Ignored(format!("{git_ref} is not a branch")));
    };
    let commit = payload["after"].as_str().map(String::from);
    let deleted = payload["deleted"].as_bool() == Some(true)
        || commit.as_deref().is_some_and(|c| !c.is_empty() && c.bytes().all(|b| b == b'0'));
    let default_branch =
        payload["repository"]["default_branch"].as_str().or_else(|| payload["project"]["default_branch"].as_str());
    let wanted = deployed_branch.or(default_branch);
    if let Some(wanted) = wanted
        && branch != wanted
    {
        return Ok(Verdict::Ignored(format!("push to {branch}, not to the deployed branch {wanted}")));
    }
    if deleted {
        return Ok(Verdict::Ignored(format!("branch {branch} was deleted")));
    }
    Ok(Verdict::Push { branch: branch.to_string(), commit })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const AFTER: &str = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";

    fn push(git_ref: &str, default_branch: &str) -> Value {
        json!({"ref": git_ref, "after": AFTER, "repository": {"default_branch": default_branch}})
    }

    fn triggers(branch: &str) -> Result<Verdict, String> {
        Ok(Verdict::Push { branch: branch.into(), commit: Some(AFTER.into()) })
    }

    fn ignored(verdict: Result<Verdict, String>) -> bool {
        matches!(verdict, Ok(Verdict::Ignored(_)))
    }

    #[test]
    fn event_header_picks_the_most_specific_forge() {
        let headers = [("x-github-event", "push"), ("x-gitea-event", "push")];
        let lookup = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        assert_eq!(event_of(lookup), (Forge::Gitea, "push"));
        assert_eq!(event_of(|_| None), (Forge::Generic, "push"));
        assert_eq!(event_of(|n| (n == "x-gitlab-event").then_some("Push Hook")), (Forge::GitLab, "Push Hook"));
    }

    #[test]
    fn branch_matching() {
        let main = push("refs/heads/main", "main");
        // The configured branch wins over the payload's default branch.
        assert_eq!(classify(Forge::GitHub, "push", &main, Some("main")), triggers("main"));
        let prod = push("refs/heads/prod", "main");
        assert_eq!(classify(Forge::GitHub, "push", &prod, Some("prod")), triggers("prod"));
        assert!(ignored(classify(Forge::GitHub, "push", &main, Some("prod"))));
        // Unset: the default branch, which is what `gitops sync` deploys then.
        assert_eq!(classify(Forge::Gitea, "push", &main, None), triggers("main"));
        assert!(ignored(classify(Forge::Gitea, "push", &prod, None)));
        let gitlab = json!({"object_kind": "push", "ref": "refs/heads/dev", "after": AFTER,
                            "project": {"default_branch": "dev"}});
        assert_eq!(classify(Forge::GitLab, "Push Hook", &gitlab, None), triggers("dev"));
        // Unset and the payload names no default branch: any branch triggers.
        let bare = json!({"ref": "refs/heads/feature", "after": AFTER});
        assert_eq!(classify(Forge::Generic, "push", &bare, None), triggers("feature"));
    }

    #[test]
    fn only_branch_pushes_trigger() {
        let tag = push("refs/tags/v1.0", "main");
        assert!(ignored(classify(Forge::GitHub, "push", &tag, None)));
        let main = push("refs/heads/main", "main");
        assert!(ignored(classify(Forge::GitHub, "issues", &main, None)));
        assert!(ignored(classify(Forge::GitLab, "Tag Push Hook", &main, None)));
        assert!(ignored(classify(Forge::GitLab, "System Hook", &main, None)));
        let system_push = json!({"object_kind": "push", "ref": "refs/heads/main", "after": AFTER});
        assert_eq!(classify(Forge::GitLab, "System Hook", &system_push, None), triggers("main"));
        assert_eq!(classify(Forge::GitHub, "ping", &json!({"zen": "x"}), None), Ok(Verdict::Ping));
        // Only GitHub has a ping; elsewhere it is just another event.
        assert!(ignored(classify(Forge::Gitea, "ping", &main, None)));
    }

    #[test]
    fn deleting_the_branch_does_not_trigger() {
        let github = json!({"ref": "refs/heads/main", "after": "0".repeat(40), "deleted": true});
        assert!(ignored(classify(Forge::GitHub, "push", &github, Some("main"))));
        let gitlab = json!({"ref": "refs/heads/main", "after": "0".repeat(40)});
        assert!(ignored(classify(Forge::GitLab, "Push Hook", &gitlab, Some("main"))));
    }

    #[test]
    fn a_push_without_ref_is_malformed() {
        assert!(classify(Forge::GitHub, "push", &json!({"after": AFTER}), None).is_err());
        assert!(classify(Forge::Generic, "push", &json!([1, 2]), None).is_err());
        assert!(classify(Forge::Generic, "push", &json!({"ref": 7}), None).is_err());
    }
}
