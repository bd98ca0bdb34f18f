//! Writing results to stdout without panicking on a closed pipe.

use anyhow::Result;
use std::io::Write;

/// Write `text` to stdout. A closed pipe (`dprepo ls | head`) ends output quietly.
pub fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Print `value` as one pretty JSON document.
pub fn print_json(value: &serde_json::Value) -> Result<()> {
    print(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// The message of `e` and of each of its causes, joined by ": ", every cause once.
/// Engine errors show their source in their own message (`/x: No such file or
/// directory (os error 2)`) and also return it as their source, so printing the whole
/// chain would repeat it; a cause whose text ends the message so far adds nothing.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Human-readable byte count (binary units).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

/// Local time for display.
pub fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Parse a size such as `1M`, `512K`, `4MiB`, `65536`.
pub fn parse_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    let unit = t[digits.len()..].trim().to_ascii_lowercase();
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 1M, 512K)"))?;
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M or G)")),
    };
    u32::try_from(n.saturating_mul(mult)).map_err(|_| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine error carrying its OS error both in its message and as its source was
    /// printed with the OS error twice ("... (os error 2): ... (os error 2)").
    #[test]
    fn error_text_prints_a_repeated_cause_once() {
        let os = std::io::Error::from_raw_os_error(2);
        let os_text = os.to_string();
        let engine = dprepo_repo_format::Error::LocalIo {
            path: "/missing".into(),
            source: os,
        };
        let e = anyhow::Error::new(engine).context("backing up");
        let text = error_text(&e);
        assert_eq!(text, format!("backing up: /missing: {os_text}"));
        // A cause its parent does not repeat is still shown.
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(2)).context("reading x");
        assert_eq!(error_text(&e), format!("reading x: {os_text}"));
    }
}
