//! Commit ids as people see them (one short form everywhere) and as state files hold them (checked on read).

use anyhow::anyhow;
use gix::ObjectId;

/// How many hex digits a short commit id shows: enough to be unique in any real repository.
const SHORT_LEN: usize = 12;

/// The short form of an id read from a file or a report (never sliced by bytes: the text may be anything).
pub fn short(text: &str) -> &str {
    let end = text.char_indices().nth(SHORT_LEN).map_or(text.len(), |(at, _)| at);
    &text[..end]
}

/// The short form of a commit id.
pub fn short_id(id: ObjectId) -> String {
    id.to_hex_with_len(SHORT_LEN).to_string()
}

/// The short form of a commit id, or "none".
pub fn short_opt(id: Option<ObjectId>) -> String {
    id.map(short_id).unwrap_or_else(|| "none".into())
}

/// A commit id stored in state.json's `field`.
pub fn parse(hex: &str, field: &str) -> anyhow::Result<ObjectId> {
    ObjectId::from_hex(hex.as_bytes())
        .map_err(|_| anyhow!("state.json field {field} holds {hex:?}, not a commit id; fix or move state.json aside"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_forms_agree() {
        let id = ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").unwrap();
        assert_eq!(short_id(id), "0123456789ab");
        assert_eq!(short(&id.to_string()), short_id(id));
        assert_eq!(short("abc"), "abc");
        assert_eq!(short("ééééééééééééééé"), "éééééééééééé");
        assert_eq!(short_opt(None), "none");
    }
}
