//! Value parsers shared by the subcommands: each checks one flag's value and says, in the
//! error clap prints, what range or form it takes. Keeping the checks here (rather than after
//! parsing) means a bad value is refused before anything is read, mounted or served, with
//! clap's usual `invalid value '…' for '--flag'` line and exit status 2.

use std::net::SocketAddr;
use trackfs::protocol::model::AudioFormat;
use trackfs::units::{parse_size, Size};

/// A byte size in `min..=max`, for flags that take human units (`256MiB`, `1G`).
pub(crate) fn size_in(
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<Size, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        let size = parse_size(text)?;
        if size < min || size > max {
            return Err(format!(
                "must be between {} and {} (got {})",
                Size(min),
                Size(max),
                Size(size)
            ));
        }
        Ok(Size(size))
    }
}

/// `--cache-size`: at least 1MiB, so the split into blocks, buffers and heads makes sense.
pub(crate) fn cache_size(text: &str) -> Result<Size, String> {
    let size = parse_size(text)?;
    if size < 1 << 20 {
        return Err(format!("must be at least 1MiB (got {})", Size(size)));
    }
    Ok(Size(size))
}

/// `--block-size`: a power of two from 4KiB (a page) to 64MiB.
pub(crate) fn block_size(text: &str) -> Result<Size, String> {
    let size = parse_size(text)?;
    if !(4096..=(64 << 20)).contains(&size) || !size.is_power_of_two() {
        return Err(format!(
            "must be a power of two between 4KiB and 64MiB (got {})",
            Size(size)
        ));
    }
    Ok(Size(size))
}

/// `--kernel-read-ahead`: `0` (keep the kernel's) or 4KiB..=64MiB. The kernel sends at most
/// 1 MiB per FUSE read here, so more than 64MiB buys nothing and is surely a typo.
pub(crate) fn kernel_read_ahead(text: &str) -> Result<Size, String> {
    let size = parse_size(text)?;
    if size != 0 && !(4096..=(64 << 20)).contains(&size) {
        return Err(format!(
            "must be 0 (keep the kernel's) or between 4KiB and 64MiB (got {})",
            Size(size)
        ));
    }
    Ok(Size(size))
}

/// A whole number in `min..=max`, with the flag's unit in the message.
pub(crate) fn number_in(
    min: u64,
    max: u64,
    unit: &'static str,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        let n: u64 = text
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a whole number"))?;
        if n < min || n > max {
            return Err(if min == 0 {
                format!("must be at most {max}{unit} (got {n})")
            } else {
                format!("must be between {min} and {max}{unit} (got {n})")
            });
        }
        Ok(n)
    }
}

/// Lifetimes of URLs and tokens: 1 s to 10 years (beyond that, expiry arithmetic overflows
/// nothing but is surely a mistake).
pub(crate) fn ttl_seconds(text: &str) -> Result<u64, String> {
    const TEN_YEARS: u64 = 10 * 365 * 24 * 3600;
    match text.trim().parse::<u64>() {
        Ok(n) if (1..=TEN_YEARS).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be between 1 second and 10 years ({TEN_YEARS}), in seconds (got {text:?})"
        )),
    }
}

/// Seconds, as a decimal number, in the open range (0, `max`).
pub(crate) fn seconds_below(
    max: f64,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |text: &str| {
        let secs: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a number of seconds"))?;
        if !(secs > 0.0 && secs < max) {
            return Err(format!(
                "must be more than 0 and less than {max} seconds (got {text})"
            ));
        }
        Ok(secs)
    }
}

/// How often a mount refreshes: a duration (`3s`, `5m`, `1h`, `1h30m`) of at least a second and
/// at most a year, or `off`.
pub(crate) fn refresh_interval(text: &str) -> Result<RefreshInterval, String> {
    const YEAR: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(RefreshInterval(None));
    }
    let hint = "a duration like 30s, 5m or 1h (at least 1s), or off";
    let every =
        humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}; use {hint}"))?;
    if every < std::time::Duration::from_secs(1) || every > YEAR {
        return Err(format!(
            "{text:?} is out of range; use {hint}, at most a year"
        ));
    }
    Ok(RefreshInterval(Some(every)))
}

/// `--refresh-interval`'s value: `None` for `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RefreshInterval(pub Option<std::time::Duration>);

impl std::fmt::Display for RefreshInterval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(every) => write!(f, "{}", humantime::format_duration(every)),
            None => f.write_str("off"),
        }
    }
}

/// A probability: a number from 0 to 1.
pub(crate) fn probability(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("must be between 0 and 1 (got {text:?})")),
    }
}

/// `127.0.0.1:8700`, or a name that resolves (`localhost:8700`): its first IPv4 address, else
/// its first.
pub(crate) fn listen(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("{text:?} is not HOST:PORT ({e})"))?
        .collect();
    // `localhost` often lists ::1 first; clients and examples use 127.0.0.1.
    let first_v4 = addrs.iter().find(|a| a.is_ipv4());
    first_v4
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// A URL the client can fetch: `http://` or `https://` with a host, as `url::Url` (WHATWG
/// rules, what browsers do) reads it, returned in its normal form (`http://h:1` becomes
/// `http://h:1/`; the client and the origin join paths to it after trimming the `/`).
pub(crate) fn http_url(text: &str) -> Result<String, String> {
    let bad = || format!("must be an http:// or https:// URL, got {text:?}");
    let url = url::Url::parse(text).map_err(|_| bad())?;
    let has_host = url.host_str().is_some_and(|h| !h.is_empty());
    if !matches!(url.scheme(), "http" | "https") || !has_host {
        return Err(bad());
    }
    Ok(url.as_str().to_string())
}

/// A format name as `publish` writes it (`FLAC_FLAC`, `OGG_VORBIS_320`, …).
pub(crate) fn format(text: &str) -> Result<AudioFormat, String> {
    AudioFormat::from_name(text).ok_or_else(|| {
        let names: Vec<_> = AudioFormat::ALL.iter().map(|f| f.name()).collect();
        format!("unknown format {text:?}; choose from {}", names.join(", "))
    })
}

/// Reads a secret file, warning when group or others may read it.
pub(crate) fn read_private_file(path: &std::path::Path, what: &str) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))?;
    // A pipe is fine (`--credentials <(pass show trackfs)`), a folder is a mistake.
    if meta.is_dir() {
        return Err(format!("the {what} file {} is a folder", path.display()));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "the {what} file {} is readable by others; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_intervals_are_durations_from_a_second_or_off() {
        let secs = |s: u64| Ok(RefreshInterval(Some(std::time::Duration::from_secs(s))));
        assert_eq!(refresh_interval("3s"), secs(3));
        assert_eq!(refresh_interval("5m"), secs(300));
        assert_eq!(refresh_interval("1h"), secs(3600));
        assert_eq!(refresh_interval("off"), Ok(RefreshInterval(None)));
        for bad in ["500ms", "0s", "5", "soon", "", "2years"] {
            assert!(refresh_interval(bad).is_err(), "{bad}");
        }
        assert_eq!(secs(300).unwrap().to_string(), "5m");
    }

    #[test]
    fn sizes_out_of_range_are_refused_with_the_range() {
        let p = size_in(1 << 10, 1 << 20);
        assert_eq!(p("4k"), Ok(Size(4096)));
        let err = p("2MiB").unwrap_err();
        assert!(err.contains("between 1KiB and 1MiB"), "{err}");
        assert!(kernel_read_ahead("1TiB").unwrap_err().contains("64MiB"));
        assert_eq!(kernel_read_ahead("0"), Ok(Size(0)));
        assert!(kernel_read_ahead("1k").is_err());
        assert!(block_size("300k").unwrap_err().contains("power of two"));
        assert!(cache_size("512k").unwrap_err().contains("at least 1MiB"));
    }

    #[test]
    fn numbers_and_seconds_are_checked() {
        let retries = number_in(0, 50, "");
        assert_eq!(retries("5"), Ok(5));
        assert!(retries("1000000").unwrap_err().contains("at most 50"));
        assert!(number_in(1, 9, " s")("10")
            .unwrap_err()
            .contains("between 1 and 9 s"));
        assert!(retries("-1").unwrap_err().contains("not a whole number"));
        assert!(ttl_seconds("0").is_err());
        assert_eq!(ttl_seconds("60"), Ok(60));
        let stall = seconds_below(3600.0);
        assert_eq!(stall("0.5"), Ok(0.5));
        assert!(stall("0").is_err() && stall("NaN").is_err() && stall("inf").is_err());
        assert!(probability("1.5").is_err() && probability("NaN").is_err());
    }

    #[test]
    fn only_http_urls_with_a_host_pass() {
        assert_eq!(
            http_url("http://127.0.0.1:8700").as_deref(),
            Ok("http://127.0.0.1:8700/")
        );
        let base = "https://origin.example/base";
        assert_eq!(http_url(base).as_deref(), Ok(base));
        for bad in [
            "ftp://x",
            "http://",
            "notaurl",
            "127.0.0.1:8700",
            "file:///x",
            "",
        ] {
            assert!(http_url(bad).is_err(), "{bad}");
        }
    }
}
