//! File names users can live with: safe for any filesystem tool, unique within a directory,
//! unicode kept as it is.

use std::collections::BTreeMap;

/// Longest name most Linux filesystems (and tools like rsync) accept, in bytes.
const NAME_MAX: usize = 255;

/// Replaces `/`, NUL and other control characters with `_` (a tab or line break in a tag
/// with a space: names with them break `find | while read`, playlists and terminals), drops
/// whitespace at either end (invisible in `ls`, so `Artist` and `Artist\n` would look the
/// same), turns `.`/`..`/empty into something visible, trims to 255 bytes at a character
/// boundary (keeping `suffix`, e.g. the extension, intact).
pub fn safe_name(raw: &str, suffix: &str) -> String {
    let mapped: String = raw
        .chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' | '\u{b}' | '\u{c}' => ' ',
            '/' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    let mut name = mapped.trim().to_string();
    if name.is_empty() || name == "." || name == ".." {
        name = format!("_{name}");
    }
    let room = NAME_MAX.saturating_sub(suffix.len());
    if name.len() > room {
        let mut cut = room;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name + suffix
}

/// Adds `stem + suffix` to `taken`, appending ` (2)`, ` (3)`… to the stem on a clash. The
/// counter is kept like the suffix (a long stem is trimmed before it), or every candidate of
/// a 255-byte stem would be the same name and the search would never end.
pub fn unique_name<V>(taken: &BTreeMap<String, V>, stem: &str, suffix: &str) -> String {
    let first = safe_name(stem, suffix);
    if !taken.contains_key(&first) {
        return first;
    }
    (2..)
        .map(|n| safe_name(stem, &format!(" ({n}){suffix}")))
        .find(|candidate| !taken.contains_key(candidate))
        .unwrap_or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_safe_and_keep_unicode() {
        assert_eq!(safe_name("AC/DC", ""), "AC_DC");
        assert_eq!(
            safe_name("Björk: \"Vespertine\"?", ".ogg"),
            "Björk: \"Vespertine\"?.ogg"
        );
        assert_eq!(safe_name("..", ""), "_..");
        assert_eq!(safe_name("", ""), "_");
        assert_eq!(safe_name("a\0b", ""), "a_b");
        assert_eq!(
            safe_name("line1\nline2\ttab", ".ogg"),
            "line1 line2 tab.ogg"
        );
        assert_eq!(
            safe_name(" Artist\n", ""),
            "Artist",
            "the same name as `Artist`"
        );
        assert_eq!(safe_name("bell\u{7}del\u{7f}c1\u{85}", ""), "bell_del_c1_");
        let long = "é".repeat(200);
        let n = safe_name(&long, ".flac");
        assert!(n.len() <= 255 && n.ends_with(".flac"));
    }

    #[test]
    fn clashes_get_a_suffix() {
        let mut taken = BTreeMap::new();
        taken.insert("01 - Intro.mp3".to_string(), ());
        assert_eq!(
            unique_name(&taken, "01 - Intro", ".mp3"),
            "01 - Intro (2).mp3"
        );
        taken.insert("01 - Intro (2).mp3".to_string(), ());
        assert_eq!(
            unique_name(&taken, "01 - Intro", ".mp3"),
            "01 - Intro (3).mp3"
        );
    }

    #[test]
    fn clashes_of_names_too_long_to_keep_still_get_a_suffix() {
        let stem = "長".repeat(100); // 300 bytes
        let mut taken = BTreeMap::new();
        for n in 1..=3 {
            let name = unique_name(&taken, &stem, ".ogg");
            assert!(name.len() <= 255, "{} bytes", name.len());
            if n > 1 {
                assert!(name.ends_with(&format!(" ({n}).ogg")), "{name}");
            }
            taken.insert(name, ());
        }
        assert_eq!(taken.len(), 3);
    }
}
