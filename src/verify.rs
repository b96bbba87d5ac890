//! Signatures checked in-process: which commits (and tags) must be signed, and whether each is.

use std::fmt;

use anyhow::Context;
use gix::ObjectId;
use ssh_key::{HashAlg, PublicKey, SshSig};
use time::OffsetDateTime;

use crate::clock;
use crate::commit_id::short_id;
use crate::fetch::Fetched;
use crate::signers::AllowedSigners;
use crate::state::{SignatureVerdict, VerificationRecord};

/// The SSH signature namespace git signs commits and tags in.
const NAMESPACE: &str = "git";

/// Which commits must carry a good signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// Only the commit being deployed.
    Head,
    /// Every commit between the deployed one and the new head, merges and their parents included.
    All,
}

/// Signature verification settings (when an allowed_signers file is configured).
#[derive(Debug, Clone)]
pub struct Trust {
    /// Who may sign.
    pub signers: AllowedSigners,
    /// Which commits must be signed.
    pub policy: Policy,
    /// History from this commit back is not checked.
    pub since: Option<ObjectId>,
}

/// A signature that verified: who signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The principals of the allowed_signers entry that matched.
    pub principal: String,
    /// SHA256 fingerprint of the signing key.
    pub fingerprint: String,
}

/// Why an object was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The commit or tag object refused.
    pub object: ObjectId,
    /// Fingerprint of the key that signed it, when there was a readable signature.
    pub fingerprint: Option<String>,
    /// One line saying why.
    pub reason: String,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.reason)
    }
}

/// Check one armored SSH signature over `payload` made at `signed_at` against the allowed signers.
pub fn check_signature(
    armored: &[u8],
    payload: &[u8],
    signed_at: OffsetDateTime,
    signers: &AllowedSigners,
) -> Result<Signed, (Option<String>, String)> {
    let text = std::str::from_utf8(armored).map_err(|_| (None, "signature is not text".to_string()))?;
    if !text.trim_start().starts_with("-----BEGIN SSH SIGNATURE-----") {
        return Err((None, "signed with GPG or X.509, not an SSH key; sign with gpg.format=ssh".into()));
    }
    let signature = SshSig::from_pem(text.trim()).map_err(|e| (None, format!("signature is malformed ({e})")))?;
    let key = signature.public_key();
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let fail = |reason: String| (Some(fingerprint.clone()), reason);
    if signature.namespace() != NAMESPACE {
        return Err(fail(format!("signature is for namespace {:?}, not {NAMESPACE:?}", signature.namespace())));
    }
    let entries: Vec<_> = signers.entries_for(key).collect();
    if entries.is_empty() {
        return Err(fail(format!("signed by {fingerprint}, which is not in the allowed signers file")));
    }
    PublicKey::from(key.clone())
        .verify(NAMESPACE, payload, &signature)
        .map_err(|_| fail(format!("signature by {fingerprint} does not match the content (tampered or re-written)")))?;
    let in_namespace: Vec<_> = entries.iter().filter(|s| s.allows_namespace(NAMESPACE)).collect();
    if in_namespace.is_empty() {
        return Err(fail(format!(
            "key {fingerprint} is not allowed to sign namespace {NAMESPACE:?} (see its namespaces= option)"
        )));
    }
    let valid = in_namespace.iter().find(|s| {
        s.valid_after.is_none_or(|after| signed_at >= after) && s.valid_before.is_none_or(|before| signed_at <= before)
    });
    match valid {
        Some(signer) => Ok(Signed { principal: signer.principals.clone(), fingerprint }),
        None => Err(fail(format!(
            "key {fingerprint} was not valid at {} (outside its valid-after/valid-before)",
            signed_at.date()
        ))),
    }
}

/// Verify one commit's signature.
pub fn verify_commit(
    repo: &gix::Repository,
    id: ObjectId,
    signers: &AllowedSigners,
) -> anyhow::Result<Result<Signed, Rejected>> {
    let commit = repo.find_commit(id).map_err(anyhow::Error::new).with_context(|| format!("reading commit {id}"))?;
    let signed_at = commit_time(&commit)?;
    let reject = |(fingerprint, reason)| Rejected { object: id, fingerprint, reason };
    let Some((signature, payload)) =
        commit.signature().map_err(anyhow::Error::new).with_context(|| format!("reading the signature of {id}"))?
    else {
        return Ok(Err(reject((None, "commit is not signed".to_string()))));
    };
    Ok(check_signature(signature.as_ref(), payload.to_bstring().as_ref(), signed_at, signers).map_err(reject))
}

/// Verify an annotated tag's signature.
pub fn verify_tag(
    repo: &gix::Repository,
    id: ObjectId,
    signers: &AllowedSigners,
) -> anyhow::Result<Result<Signed, Rejected>> {
    let object = repo.find_object(id).map_err(anyhow::Error::new).with_context(|| format!("reading tag {id}"))?;
    let reject = |(fingerprint, reason)| Rejected { object: id, fingerprint, reason };
    let Some((signature, payload)) = gix::objs::TagRefIter::signature(&object.data) else {
        return Ok(Err(reject((None, "tag is not signed".to_string()))));
    };
    let tagger_time = gix::objs::TagRefIter::from_bytes(&object.data, repo.object_hash())
        .tagger()
        .map_err(anyhow::Error::new)
        .context("decoding tag")?
        .map(|t| t.time().map(|t| t.seconds).unwrap_or(0))
        .unwrap_or(0);
    let signed_at = OffsetDateTime::from_unix_timestamp(tagger_time).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    Ok(check_signature(signature.data.as_ref(), payload.to_bstring().as_ref(), signed_at, signers).map_err(reject))
}

fn commit_time(commit: &gix::Commit<'_>) -> anyhow::Result<OffsetDateTime> {
    let seconds = commit.time().map_err(anyhow::Error::new).context("reading the committer time")?.seconds;
    Ok(OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH))
}

/// The commits `policy` requires to be signed for deploying `head` over `deployed`, oldest first.
///
/// `trusted` commits (the deployed one, and `--verify-since`) and their ancestors are not checked.
pub fn commits_to_check(
    repo: &gix::Repository,
    head: ObjectId,
    trusted: &[ObjectId],
    policy: Policy,
) -> anyhow::Result<Vec<ObjectId>> {
    if policy == Policy::Head {
        return Ok(vec![head]);
    }
    let hidden: Vec<ObjectId> = trusted.iter().copied().filter(|id| repo.has_object(*id)).collect();
    let walk = repo
        .rev_walk([head])
        .with_hidden(hidden)
        .all()
        .map_err(anyhow::Error::new)
        .context("listing the commits to verify")?;
    let mut ids = Vec::new();
    for info in walk {
        ids.push(info.map_err(anyhow::Error::new).context("walking history to verify")?.id);
    }
    ids.reverse();
    Ok(ids)
}

/// Verify every commit in `ids`; the first rejection wins.
pub fn verify_commits(
    repo: &gix::Repository,
    ids: &[ObjectId],
    signers: &AllowedSigners,
) -> anyhow::Result<Result<Vec<Signed>, Rejected>> {
    let mut signed = Vec::with_capacity(ids.len());
    for id in ids {
        match verify_commit(repo, *id, signers)? {
            Ok(s) => signed.push(s),
            Err(rejected) => return Ok(Err(rejected)),
        }
    }
    Ok(Ok(signed))
}

/// Check the tag (if any) and the commits the policy requires; log and return the verdict.
pub fn check(
    repo: &gix::Repository,
    trust: &Trust,
    fetched: &Fetched,
    deployed: Option<ObjectId>,
) -> anyhow::Result<VerificationRecord> {
    let trusted: Vec<ObjectId> = deployed.into_iter().chain(trust.since).collect();
    let mut commits = commits_to_check(repo, fetched.commit, &trusted, trust.policy)?;
    if !commits.contains(&fetched.commit) {
        // A rewind deploys an ancestor of what was verified before: check it all the same.
        commits.push(fetched.commit);
    }
    let tag_verdict = match fetched.tag {
        Some(tag) => Some(verify_tag(repo, tag, &trust.signers)?),
        None => None,
    };
    let verdict = match tag_verdict {
        Some(Err(rejected)) => Err(rejected),
        _ => verify_commits(repo, &commits, &trust.signers)?.map(|mut signed| signed.pop()),
    };
    let mut record = VerificationRecord {
        commit: fetched.commit.to_string(),
        verdict: SignatureVerdict::Verified,
        object: fetched.commit.to_string(),
        principal: None,
        fingerprint: None,
        reason: None,
        commits_checked: commits.len(),
        at: clock::now(),
    };
    match verdict {
        Ok(head) => {
            let head = head.unwrap_or_else(|| Signed { principal: String::new(), fingerprint: String::new() });
            log::info!(
                "verified {} commit(s) up to {}: signed by {} ({})",
                commits.len(),
                short_id(fetched.commit),
                head.principal,
                head.fingerprint
            );
            record.principal = Some(head.principal);
            record.fingerprint = Some(head.fingerprint);
        }
        Err(rejected) => {
            log::error!(
                "refusing to deploy {}: {} {} {}; nothing changed (the live revision stays); sign it with an allowed key and push again",
                short_id(fetched.commit),
                if Some(rejected.object) == fetched.tag { "tag" } else { "commit" },
                rejected.object,
                rejected.reason,
            );
            record.verdict = SignatureVerdict::Rejected;
            record.object = rejected.object.to_string();
            record.fingerprint = rejected.fingerprint;
            record.reason = Some(rejected.reason);
        }
    }
    Ok(record)
}
