//! Small helpers with no better home: UTC timestamps, run ids, process start times.

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

/// (year, month, day, hour, minute, second) in UTC for a Unix time.
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// `t` as RFC 3339 (ISO 8601) in UTC with milliseconds: every time the runner prints
/// for tools (`started_at`, `last_used`, `ended_at`).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `#[serde(serialize_with = "util::rfc3339_opt")]` for an `Option<SystemTime>`.
pub fn rfc3339_opt<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

/// `text` safe to print on a terminal: printable characters as they are, everything
/// else escaped (`\x1b`, `\n`, `\u{202e}`). An allowlist: control characters (C0, DEL,
/// C1), bidirectional and zero-width format characters and the byte-order mark can
/// neither move the cursor, recolour, retitle the terminal nor reorder what is shown.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    fn shown(c: char) -> bool {
        !c.is_control()
            && !matches!(c,
                '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
    }
    if text.chars().all(shown) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if shown(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Write `bytes` to `path` whole or not at all: into a new temporary file beside it
/// (a name no one planted: `create_new`), then renamed over it.
pub fn write_file_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}.{}", std::process::id(), random_hex(4)));
    let tmp = std::path::PathBuf::from(tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_err()
    {
        let seed = format!("{:?}{}", SystemTime::now(), std::process::id());
        buf.copy_from_slice(&blake3::hash(seed.as_bytes()).as_bytes()[..bytes]);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// `20261128T044500-train-3f9a1c2e`: sortable, readable, unique across concurrent runs.
pub fn new_run_id(step: &str) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (y, mo, d, h, mi, s) = civil(secs);
    let mut slug: String = step
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    slug.truncate(32);
    let slug = slug.trim_matches('-');
    let slug = if slug.is_empty() { "step" } else { slug };
    format!(
        "{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}-{slug}-{}",
        random_hex(4)
    )
}

/// Field 22 (`starttime`, clock ticks since boot) of a `/proc/<pid>/stat` text. The
/// command name before it is in parentheses and may hold spaces and parentheses
/// itself: count from the last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The start time of a live process (see [`parse_start_time`]): with its pid, it names
/// the process even after the pid is reused.
pub fn start_time(pid: i32) -> Option<u64> {
    parse_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_comm() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194304 98 0 0 0 0 0 0 0 20 0 1 0 27617 3133440";
        assert_eq!(parse_start_time(stat), Some(27617));
        assert!(start_time(std::process::id() as i32).unwrap() > 0);
        assert_eq!(start_time(-1), None);
    }

    #[test]
    fn printable_text_cannot_drive_the_terminal() {
        assert_eq!(printable("train · ünïcode"), "train · ünïcode");
        assert_eq!(
            printable("a\x1b]0;owned\x07b\x1b[2Jc\n\u{202e}d\u{9b}"),
            "a\\x1b]0;owned\\x07b\\x1b[2Jc\\n\\u{202e}d\\u{9b}"
        );
        for c in (0..0x20u32).chain(0x7f..0xa0).filter_map(char::from_u32) {
            assert!(!printable(&c.to_string()).contains(c), "{c:?}");
        }
    }

    #[test]
    fn run_ids_are_safe_and_unique() {
        let a = new_run_id("../x'; rm -rf /");
        let b = new_run_id("../x'; rm -rf /");
        assert_ne!(a, b);
        assert!(
            a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{a}"
        );
    }
}
