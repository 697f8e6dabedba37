//! Printing to stdout that survives a closed or full one. `println!` panics when stdout is
//! a pipe whose reader has gone (`trackfs stats | head -1`), and the demo prints after it
//! unmounts, when a panic would skip its cleanup.

use std::io::Write;

/// Writes `text` to stdout. A reader that went away is not an error (like `ls | head`);
/// any other failure is, with a message saying so.
pub fn print(text: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("cannot write to stdout: {e}"))
        }
        _ => Ok(()),
    }
}

/// Writes `text` to stdout when it can: for messages that must not stop what follows them.
pub fn say(text: &str) {
    let _ = print(text);
}
