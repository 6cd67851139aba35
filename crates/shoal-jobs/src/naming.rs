//! Output file names: `{index:05}-{seed}-{slug}.png`.
//!
//! The index makes every name unique (duplicate prompts never collide); the
//! slug is a readable hint made only of `[a-z0-9-]`, at most 48 bytes, so a
//! name can never hold a path separator, `..`, a control character or invalid
//! UTF-8, and never leaves the output folder (`shared/notes/semantics.md` §14).

use crate::items::WorkItem;

/// The slug's byte limit.
pub const SLUG_BYTES: usize = 48;

/// A file-name-safe slug of a prompt: lowercase ASCII letters and digits,
/// runs of anything else as one `-`; `image` when nothing is left.
pub fn slug(prompt: &str) -> String {
    let mut s = String::new();
    for ch in prompt.chars().flat_map(char::to_lowercase) {
        if s.len() >= SLUG_BYTES {
            break;
        }
        if ch.is_ascii_alphanumeric() {
            s.push(ch);
        } else if !s.is_empty() && !s.ends_with('-') {
            s.push('-');
        }
    }
    let s = s.trim_end_matches('-');
    if s.is_empty() {
        "image".into()
    } else {
        s.to_string()
    }
}

/// The file name of an item's image.
pub fn file_name(item: &WorkItem) -> String {
    format!("{:05}-{}-{}.png", item.index, item.seed, slug(&item.prompt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_prompts_give_safe_names() {
        assert_eq!(slug("A Red Fox!"), "a-red-fox");
        assert_eq!(slug("../../etc/passwd"), "etc-passwd");
        assert_eq!(slug("..."), "image");
        assert_eq!(slug("日本語のプロンプト"), "image");
        assert_eq!(slug("line\nbreak\ttab"), "line-break-tab");
    }

    proptest! {
        #[test]
        fn slugs_are_safe_for_any_input(p in any::<String>()) {
            let s = slug(&p);
            prop_assert!(!s.is_empty() && s.len() <= SLUG_BYTES);
            prop_assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            prop_assert!(!s.starts_with('-') && !s.ends_with('-'));
        }
    }
}
