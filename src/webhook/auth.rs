//! The webhook secret and the forges' ways of proving they know it (HMAC-SHA256 signatures, GitLab's token).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::secret_file::check_private_file;

/// Name of the systemd credential (`LoadCredential=webhook-secret:…`).
pub const CREDENTIAL_NAME: &str = "webhook-secret";
/// Shorter secrets are refused: they can be guessed offline from one signed delivery.
const MIN_SECRET_LEN: usize = 16;

/// The shared webhook secret. Its `Debug` never shows the bytes, so it cannot end up in a log.
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes, redacted)", self.0.len())
    }
}

#[cfg(test)]
impl Secret {
    /// A secret from raw bytes, for unit tests.
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }
}

/// Read the secret from `--secret-file`, else from the systemd credential; refuse to run without one.
///
/// `--secret-file` must not be readable by group or others (as `--ssh-key`). A credential
/// is not mode-checked: systemd itself places it in a directory only the service can read.
pub fn load_secret(secret_file: Option<&Path>, credentials_dir: Option<&Path>) -> anyhow::Result<Secret> {
    let (path, what): (PathBuf, &str) = match (secret_file, credentials_dir) {
        (Some(file), _) => {
            check_private_file(file, "--secret-file")?;
            (file.to_path_buf(), "--secret-file")
        }
        (None, Some(dir)) => {
            let path = dir.join(CREDENTIAL_NAME);
            if !path.exists() {
                bail!(
                    "systemd credential {CREDENTIAL_NAME} is missing from {}; add LoadCredential={CREDENTIAL_NAME}:/etc/gitops/webhook-secret to the unit, or pass --secret-file FILE",
                    dir.display()
                );
            }
            (path, "systemd credential")
        }
        (None, None) => bail!(
            "no webhook secret: pass --secret-file FILE (mode 0600) or start it from gitops-webhook.service with LoadCredential={CREDENTIAL_NAME}:…; it refuses to accept unauthenticated hooks"
        ),
    };
    let bytes = fs::read(&path)
        .with_context(|| format!("{what} {}: cannot read it; check the path and permissions", path.display()))?;
    // `echo secret > file` leaves a newline the forge never saw.
    let secret = bytes.trim_ascii().to_vec();
    if secret.len() < MIN_SECRET_LEN {
        bail!(
            "{what} {}: the secret is {} bytes, shorter than {MIN_SECRET_LEN}; generate one with: openssl rand -hex 32 > {}",
            path.display(),
            secret.len(),
            path.display()
        );
    }
    // Belt and braces: should the secret ever reach a log line, the redactor hides it.
    crate::redact::register(&String::from_utf8_lossy(&secret));
    Ok(Secret(secret))
}

/// How a credential header is checked.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `sha256=<hex HMAC-SHA256 of the body>` (GitHub, and our generic header).
    PrefixedHmac,
    /// `<hex HMAC-SHA256 of the body>` (Gitea, Forgejo, Gogs).
    HexHmac,
    /// The secret itself (GitLab).
    Token,
}

/// Every credential header we understand. All that are present must check out.
const CREDENTIALS: [(&str, Kind); 6] = [
    ("x-hub-signature-256", Kind::PrefixedHmac),
    ("x-gitea-signature", Kind::HexHmac),
    ("x-forgejo-signature", Kind::HexHmac),
    ("x-gogs-signature", Kind::HexHmac),
    ("x-gitlab-token", Kind::Token),
    ("x-gitops-signature", Kind::PrefixedHmac),
];

/// Why a delivery is not authenticated (answered 401, nothing triggered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No credential header at all.
    Missing,
    /// This header is present but wrong (bad signature, wrong token, not hex).
    Invalid(&'static str),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => f.write_str(
                "no signature: expected X-Hub-Signature-256, X-Gitea-Signature, X-Gitlab-Token or X-Gitops-Signature",
            ),
            AuthError::Invalid(header) => write!(f, "{header} does not match the webhook secret"),
        }
    }
}

/// Check the delivery's credentials against the secret; `Ok` names the header that proved it.
///
/// `headers` holds (lower-case name, value) pairs; a header given twice must be right both times,
/// and a delivery carrying several kinds (Gitea sends its own and GitHub's) must be right in each.
pub fn authenticate(secret: &Secret, headers: &[(String, String)], body: &[u8]) -> Result<&'static str, AuthError> {
    let mut mac = match Hmac::<Sha256>::new_from_slice(&secret.0) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; kept as a refusal rather than a panic all the same.
        Err(_) => return Err(AuthError::Missing),
    };
    mac.update(body);
    let mut proved_by = None;
    for (name, value) in headers {
        let Some((header, kind)) = CREDENTIALS.iter().find(|(h, _)| h == name) else {
            continue;
        };
        let value = value.trim();
        let valid = match kind {
            Kind::PrefixedHmac => value
                .strip_prefix("sha256=")
                .and_then(|hex_sig| hex::decode(hex_sig).ok())
                .is_some_and(|sig| mac.clone().verify_slice(&sig).is_ok()),
            Kind::HexHmac => hex::decode(value).ok().is_some_and(|sig| mac.clone().verify_slice(&sig).is_ok()),
            // Constant time for equal lengths; the length of the secret is no secret worth keeping.
            Kind::Token => bool::from(value.as_bytes().ct_eq(&secret.0)),
        };
        if !valid {
            return Err(AuthError::Invalid(header_display(header)));
        }
        proved_by.get_or_insert(header_display(header));
    }
    proved_by.ok_or(AuthError::Missing)
}

/// The header's usual spelling, for messages.
fn header_display(lower: &str) -> &'static str {
    match lower {
        "x-hub-signature-256" => "X-Hub-Signature-256",
        "x-gitea-signature" => "X-Gitea-Signature",
        "x-forgejo-signature" => "X-Forgejo-Signature",
        "x-gogs-signature" => "X-Gogs-Signature",
        "x-gitlab-token" => "X-Gitlab-Token",
        _ => "X-Gitops-Signature",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    // The example in GitHub's "Validating webhook deliveries" documentation.
    const DOC_SECRET: &str = "It's a Secret to Everybody";
    const DOC_BODY: &str = "Hello, World!";
    const DOC_SIG: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_documented_example_verifies() {
        let secret = Secret::new(DOC_SECRET.into());
        let sig = format!("sha256={DOC_SIG}");
        assert_eq!(
            authenticate(&secret, &headers(&[("x-hub-signature-256", &sig)]), DOC_BODY.as_bytes()),
            Ok("X-Hub-Signature-256")
        );
        assert_eq!(
            authenticate(&secret, &headers(&[("x-gitea-signature", DOC_SIG)]), DOC_BODY.as_bytes()),
            Ok("X-Gitea-Signature")
        );
        assert_eq!(
            authenticate(&secret, &headers(&[("x-gitops-signature", &sig)]), DOC_BODY.as_bytes()),
            Ok("X-Gitops-Signature")
        );
        // One byte of body changed.
        assert_eq!(
            authenticate(&secret, &headers(&[("x-hub-signature-256", &sig)]), b"Hello, World?"),
            Err(AuthError::Invalid("X-Hub-Signature-256"))
        );
    }

    #[test]
    fn malformed_or_missing_credentials_are_refused() {
        let secret = Secret::new(DOC_SECRET.into());
        let body = DOC_BODY.as_bytes();
        for (name, value) in [
            ("x-hub-signature-256", DOC_SIG),                // missing sha256= prefix
            ("x-hub-signature-256", "sha256=zz"),            // not hex
            ("x-hub-signature-256", "sha256="),              // empty
            ("x-gitea-signature", &DOC_SIG[..32]),           // truncated
            ("x-gitlab-token", "It's a Secret to Everybod"), // prefix of the secret
            ("x-gitlab-token", ""),
        ] {
            assert!(
                matches!(authenticate(&secret, &headers(&[(name, value)]), body), Err(AuthError::Invalid(_))),
                "{name}: {value:?} was accepted"
            );
        }
        assert_eq!(authenticate(&secret, &headers(&[("x-hub-signature", "sha1=00")]), body), Err(AuthError::Missing));
        assert_eq!(authenticate(&secret, &[], body), Err(AuthError::Missing));
    }

    #[test]
    fn every_credential_present_must_be_right() {
        let secret = Secret::new(DOC_SECRET.into());
        let good = format!("sha256={DOC_SIG}");
        let pairs = [("x-hub-signature-256", good.as_str()), ("x-gitlab-token", "wrong-token-value")];
        assert_eq!(
            authenticate(&secret, &headers(&pairs), DOC_BODY.as_bytes()),
            Err(AuthError::Invalid("X-Gitlab-Token"))
        );
        let twice = [("x-hub-signature-256", good.as_str()), ("x-hub-signature-256", "sha256=00")];
        assert!(authenticate(&secret, &headers(&twice), DOC_BODY.as_bytes()).is_err());
        let token = [("x-gitlab-token", DOC_SECRET)];
        assert_eq!(authenticate(&secret, &headers(&token), b"anything"), Ok("X-Gitlab-Token"));
    }

    #[test]
    fn secret_is_never_shown() {
        let secret = Secret::new(b"hunter2-hunter2-hunter2".to_vec());
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn secret_loading() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        fs::write(&file, "0123456789abcdef0123\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let secret = load_secret(Some(&file), None).unwrap();
        assert_eq!(secret.0, b"0123456789abcdef0123", "trailing newline trimmed");

        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_secret(Some(&file), None).unwrap_err().to_string();
        assert!(err.contains("too open") && err.contains("chmod 600"), "{err}");

        fs::write(dir.path().join(CREDENTIAL_NAME), "short").unwrap();
        let err = load_secret(None, Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("openssl rand -hex 32"), "{err}");
        let err = load_secret(None, Some(&dir.path().join("nowhere"))).unwrap_err().to_string();
        assert!(err.contains("LoadCredential=webhook-secret"), "{err}");
        let err = load_secret(None, None).unwrap_err().to_string();
        assert!(err.contains("--secret-file"), "{err}");
    }
}
