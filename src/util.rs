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

/// Whether `s` is a variable name as shells take them: letters, digits and `_`, not
/// starting with a digit (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_variable_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// At most `max` characters of `s`, the last one `…` when it was cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Whether `c` is shown as itself on a terminal, and only as itself: not a control
/// character (C0, DEL, C1), nor a bidirectional or zero-width format character, nor a
/// byte-order mark. An allowlist, see [`printable`].
pub fn is_shown(c: char) -> bool {
    !c.is_control()
        && !matches!(c,
            '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

/// `text` safe to print on a terminal: printable characters as they are, everything
/// else escaped (`\x1b`, `\n`, `\u{202e}`). An allowlist: control characters (C0, DEL,
/// C1), bidirectional and zero-width format characters and the byte-order mark can
/// neither move the cursor, recolour, retitle the terminal nor reorder what is shown.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    escaped_unless(text, is_shown)
}

/// [`is_shown`], in a text of many lines: line feeds and tabs too.
pub fn is_shown_in_lines(c: char) -> bool {
    is_shown(c) || c == '\n' || c == '\t'
}

/// [`printable`] for a text of many lines: its line ends and tabs kept (a YAML plan
/// with its scripts as block scalars).
pub fn printable_lines(text: &str) -> std::borrow::Cow<'_, str> {
    escaped_unless(text, is_shown_in_lines)
}

fn escaped_unless(text: &str, shown: impl Fn(char) -> bool) -> std::borrow::Cow<'_, str> {
    if text.chars().all(&shown) {
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

/// Open `path` with `options` as a step may have left it (in its run folder, beside a
/// cache entry): only a regular file, not followed through a symlink (to `/dev/zero`,
/// or to a file of someone else's), never waited on (a FIFO in its place would block
/// the open until someone opened its other end), never a controlling terminal. An
/// error otherwise. With the file, what `fstat` said of it.
pub fn open_regular(
    options: &mut std::fs::OpenOptions,
    path: &std::path::Path,
) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok((f, meta))
}

/// A file of a run folder, opened to read ([`open_regular`]).
pub fn open_run_file(
    path: &std::path::Path,
) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    open_regular(std::fs::OpenOptions::new().read(true), path)
}

/// [`open_run_file`], read whole: at most `limit` bytes. An error otherwise.
pub fn read_run_file(path: &std::path::Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let (f, meta) = open_run_file(path)?;
    if meta.len() > limit {
        return Err(std::io::Error::other(format!("larger than {limit} bytes")));
    }
    let mut bytes = Vec::new();
    // A file that grows while it is read still stops at the limit.
    f.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
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

    /// What a step can leave where the runner reads a run file: a FIFO (read at once as
    /// an error, not waited on), a symlink to a file elsewhere or to an endless device
    /// (not followed), a file larger than the limit (refused).
    #[test]
    fn run_files_are_read_as_regular_files_only_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let f = fifo.clone();
        std::thread::spawn(move || tx.send(read_run_file(&f, 100).is_err()));
        let refused = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the read returned (it did not wait on the FIFO)");
        assert!(refused);

        let secret = dir.path().join("secret");
        std::fs::write(&secret, "elsewhere").unwrap();
        for (name, target) in [
            ("link", secret.as_path()),
            ("zero", std::path::Path::new("/dev/zero")),
        ] {
            let link = dir.path().join(name);
            std::os::unix::fs::symlink(target, &link).unwrap();
            assert!(read_run_file(&link, 100).is_err(), "{name}");
        }

        let big = dir.path().join("big");
        std::fs::write(&big, b"0123456789").unwrap();
        assert!(read_run_file(&big, 9).is_err());
        assert_eq!(read_run_file(&big, 10).unwrap(), b"0123456789");
    }

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
