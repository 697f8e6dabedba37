//! The key file format, `<file id hex> <key hex>` per line: `publish` writes it (LIBRARY/keys),
//! `serve` reads it, and so does `mount --keys`. One parser, so the two sides cannot disagree.

use crate::protocol::crypto::AudioKey;
use crate::protocol::model::FileId;
use std::collections::BTreeMap;

pub type Keys = BTreeMap<FileId, AudioKey>;

/// A line that is not `<file id hex> <key hex>`. Never carries the key itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct KeyFileError {
    pub line: usize,
    pub reason: String,
}

/// Parses a key file; `#` comments and blank lines are allowed, file ids in either case.
pub fn parse(text: &str) -> Result<Keys, KeyFileError> {
    let mut keys = Keys::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let error = |reason: String| KeyFileError {
            line: index + 1,
            reason,
        };
        let mut parts = line.split_whitespace();
        let (Some(id), Some(key), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(error("expected `<file id hex> <key hex>`".into()));
        };
        // The id's parse error would quote it, and with the columns swapped that is the key.
        let id = FileId::from_hex(&id.to_ascii_lowercase()).map_err(|_| {
            error(format!(
                "the first column is not a file id ({} hex characters)",
                FileId::HEX_LEN
            ))
        })?;
        let key = AudioKey::from_hex(key).map_err(|e| error(format!("bad key: {e}")))?;
        keys.insert(id, key);
    }
    Ok(keys)
}

/// The file's text, one sorted line per key.
pub fn format(keys: &Keys) -> String {
    keys.iter()
        .map(|(id, key)| format!("{id} {}\n", hex::encode(key.0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_parse_and_errors_name_the_line_without_the_key() {
        let id = "ab".repeat(20);
        let text = format!("# keys\n{id} {}\n\n", "01".repeat(16));
        let keys = parse(&text).unwrap();
        assert_eq!(keys.len(), 1);
        let bad = format!("{id} 0102\n");
        let e = parse(&bad).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(!e.to_string().contains("0102"));
        assert!(parse("nonsense").is_err());
    }

    #[test]
    fn a_key_in_the_file_id_column_is_not_printed() {
        let (id, key) = ("ab".repeat(20), "0123456789abcdef".repeat(2));
        let e = parse(&format!("{key} {id}\n")).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.to_string().contains("not a file id"), "{e}");
        assert!(!e.to_string().contains("0123456789"), "{e}");
    }

    #[test]
    fn keys_round_trip_and_reject_garbage() {
        let id = FileId([0xab; 20]);
        let text = format!("# comment\n\n{id} {}\n", "01".repeat(16));
        let keys = parse(&text).unwrap();
        assert_eq!(keys[&id], AudioKey([1; 16]));
        assert_eq!(parse(&format(&keys)).unwrap(), keys);
        assert!(parse("nothex 00").is_err());
        assert!(parse(&format!("{id} 0011")).is_err());
    }
}
