//! Tests that check what the code logs (one warning, never a secret) capture it here: a
//! subscriber for the duration of one call, its lines kept as text.

use std::sync::{Arc, Mutex};

/// What `f` logs at `level` and above, one event a line, beside what it returns.
pub(crate) fn logs_of<T>(level: tracing::Level, f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut bytes = self.0.lock().unwrap_or_else(|p| p.into_inner());
            bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let bytes = sink.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    (result, String::from_utf8_lossy(&bytes).into_owned())
}
