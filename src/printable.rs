//! Repository-supplied text (commit subjects, authors, file names) made safe for a terminal or a chat
//! message: control characters are shown escaped, so a commit cannot clear a screen, retitle a window or
//! fake a line of gitops's own output.

use std::borrow::Cow;

/// `text` with every control character (C0, DEL, C1) written as its escape (`\r`, `\u{1b}`).
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_are_shown_not_obeyed() {
        assert_eq!(printable("bump nginx"), "bump nginx");
        assert_eq!(printable("héllo — ok"), "héllo — ok");
        assert_eq!(printable("a\rb"), "a\\rb");
        assert_eq!(printable("\u{1b}[2Jfake"), "\\u{1b}[2Jfake");
        assert_eq!(printable("\u{1b}]0;title\u{7}"), "\\u{1b}]0;title\\u{7}");
        assert_eq!(printable("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(printable("line\nnext"), "line\\nnext");
    }
}
