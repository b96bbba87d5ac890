//! Secrets never leak: every known secret is replaced by `***` in all output we produce.

use std::sync::{Mutex, OnceLock};

/// Secrets shorter than this are not registered: replacing them would garble ordinary text.
pub const MIN_SECRET_LEN: usize = 4;

fn registry() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remember a secret so that `redact` hides it from now on.
pub fn register(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    if let Ok(mut secrets) = registry().lock()
        && !secrets.iter().any(|s| s == secret)
    {
        secrets.push(secret.to_string());
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Register the password of a URL (`https://user:token@host/…`), or a token-like lone user, as a secret.
pub fn register_url(url: &str) {
    match userinfo(url) {
        Some((_, Some(password))) => register(password),
        Some((user, None)) if looks_like_token(user) => register(user),
        _ => {}
    }
}

/// A lone URL user this long is a token (`https://ghp_…@host`), not a name like `git`.
fn looks_like_token(user: &str) -> bool {
    user.len() >= 20
}

/// `text` with every registered secret replaced by `***`.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    if let Ok(secrets) = registry().lock() {
        for secret in secrets.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
    }
    out
}

/// A URL for display: its password (or a lone token as user) replaced by `***`.
pub fn url(url: &str) -> String {
    match userinfo(url) {
        Some((user, Some(password))) => url.replacen(&format!("{user}:{password}@"), &format!("{user}:***@"), 1),
        Some((user, None)) if looks_like_token(user) => url.replacen(&format!("{user}@"), "***@", 1),
        _ => url.to_string(),
    }
}

/// (user, password) of a `scheme://user[:password]@host/...` URL.
fn userinfo(url: &str) -> Option<(&str, Option<&str>)> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let (info, _) = authority.rsplit_once('@')?;
    Some(match info.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (info, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(url("https://bot:s3cr3t@git.example.com/fleet.git"), "https://bot:***@git.example.com/fleet.git");
        assert_eq!(url("https://ghp_0123456789abcdefghij@h/x"), "***@h/x".replace("***", "https://***"));
        assert_eq!(url("ssh://git@h/x"), "ssh://git@h/x", "a user name alone is not a secret");
        assert_eq!(url("git@h:x"), "git@h:x");
    }

    #[test]
    fn registered_secrets_are_replaced_anywhere() {
        register("tok-123456");
        register("ab"); // too short to register
        assert_eq!(redact("auth tok-123456 failed; ab"), "auth *** failed; ab");
        register_url("https://u:pass-9876@h/x");
        assert_eq!(redact("fetching https://u:pass-9876@h/x"), "fetching https://u:***@h/x");
        register_url("ssh://root@h/x");
        assert_eq!(redact("/root/key"), "/root/key", "a user name is not a secret");
    }
}
