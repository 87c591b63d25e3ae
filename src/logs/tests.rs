//! Pumps fed by real child processes; every test checks the exact bytes on disk.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use super::*;

/// Deterministic bytes covering every value (xorshift), different per `seed`.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn spec(path: &Path, limit: Option<u64>) -> LogSpec {
    LogSpec {
        path: path.to_owned(),
        limit,
        live: Live::None,
    }
}

/// Run `sh -c script` (its `$1`, `$2`.. being `args`) with both streams pumped;
/// returns the (stdout, stderr) stats.
fn run(script: &str, args: &[&Path], out: LogSpec, err: LogSpec) -> (LogStats, LogStats) {
    let mut child = Command::new("sh")
        .args(["-c", script, "sh"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let out = pump(child.stdout.take().unwrap().into(), out).unwrap();
    let err = pump(child.stderr.take().unwrap().into(), err).unwrap();
    assert!(child.wait().unwrap().success(), "child failed: {script}");
    (out.join().unwrap(), err.join().unwrap())
}

/// Pump `data` (via `cat` from a file) into a log with `limit`; returns the file.
fn cat_through(data: &[u8], limit: Option<u64>) -> (Vec<u8>, LogStats) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, data).unwrap();
    let log = dir.path().join("out.log");
    let (out, _) = run(
        "cat \"$1\"",
        &[&input],
        spec(&log, limit),
        spec(&dir.path().join("err.log"), None),
    );
    (std::fs::read(&log).unwrap(), out)
}

fn marker(omitted: usize) -> Vec<u8> {
    format!("\n[runner: {omitted} bytes omitted]\n").into_bytes()
}

/// What a log capped at `limit` must hold for `data`.
fn capped(data: &[u8], limit: usize) -> Vec<u8> {
    if data.len() <= limit {
        return data.to_vec();
    }
    let (head, tail) = (limit / 2, limit - limit / 2);
    let mut want = data[..head].to_vec();
    want.extend(marker(data.len() - limit));
    want.extend_from_slice(&data[data.len() - tail..]);
    want
}

#[test]
fn copies_exact_bytes_from_a_child() {
    let data = pattern(3 * 1024 * 1024 + 17, 1);
    let (file, stats) = cat_through(&data, None);
    assert!(file == data, "file differs from what the child wrote");
    let n = data.len() as u64;
    assert_eq!(
        stats,
        LogStats {
            bytes: n,
            written: n,
            truncated: false,
            live_failed: false
        }
    );
}

#[test]
fn empty_output_gives_an_empty_file() {
    let (file, stats) = cat_through(b"", Some(10));
    assert!(file.is_empty());
    assert_eq!((stats.bytes, stats.written, stats.truncated), (0, 0, false));
}

#[test]
fn invalid_utf8_and_a_100_mib_line_without_newline_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out.log"), dir.path().join("err.log"));
    let (o, e) = run(
        r"printf '\377\376\000a\r\n\200\300'; head -c 104857600 /dev/zero | tr '\000' x; printf '\351\n\000' >&2",
        &[],
        spec(&out, None),
        spec(&err, None),
    );
    let mut want = b"\xff\xfe\0a\r\n\x80\xc0".to_vec();
    want.resize(want.len() + 100 * 1024 * 1024, b'x');
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "stdout bytes differ");
    assert_eq!((o.bytes, o.written), (want.len() as u64, want.len() as u64));
    assert_eq!(std::fs::read(&err).unwrap(), b"\xe9\n\0");
    assert_eq!((e.bytes, e.written), (3, 3));
}

#[test]
fn limit_keeps_exact_head_and_tail_with_the_omitted_count() {
    let data = pattern(1_000_003, 2);
    for limit in [1001usize, 1000, 2, 1, 0] {
        let (file, stats) = cat_through(&data, Some(limit as u64));
        let want = capped(&data, limit);
        assert!(file == want, "limit {limit}: file differs");
        assert_eq!(stats.bytes, data.len() as u64);
        assert_eq!(stats.written, want.len() as u64, "limit {limit}");
        assert!(stats.truncated);
    }
    let (file, _) = cat_through(&data, Some(1001));
    let omitted = format!("\n[runner: {} bytes omitted]\n", 1_000_003 - 1001);
    assert_eq!(&file[500..500 + omitted.len()], omitted.as_bytes());
}

#[test]
fn output_within_the_limit_is_untouched() {
    let data = pattern(5000, 3);
    for limit in [5000u64, 5001, 1 << 30] {
        let (file, stats) = cat_through(&data, Some(limit));
        assert!(file == data, "limit {limit}");
        assert_eq!((stats.written, stats.truncated), (5000, false));
    }
}

#[test]
fn large_tail_spills_to_disk_and_stays_exact() {
    // Tail of 3 MiB + 1 is over MEMORY_RING_MAX: the ring lives in a spill file.
    let data = pattern(20 * 1024 * 1024 + 5, 4);
    let limit = 6 * 1024 * 1024 + 3;
    let (file, stats) = cat_through(&data, Some(limit as u64));
    assert!(file == capped(&data, limit), "file differs");
    assert_eq!(stats.written, file.len() as u64);
    assert!(stats.truncated);
}

/// The ring across every alignment of chunks against its size, without processes.
#[test]
fn ring_is_exact_for_any_chunking() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(10_000, 5);
    let mut buf = vec![0; 64];
    for limit in [0usize, 1, 7, 64, 999, 4096, 9999, 10_000, 20_000] {
        for chunk in [1usize, 3, 64, 500, 7777, 10_000] {
            let path = dir.path().join("ring.log");
            let file = File::create(&path).unwrap();
            let mut sink = FileSink::new(file, path.clone(), Some(limit as u64));
            for piece in data.chunks(chunk) {
                sink.push(piece);
            }
            let (written, truncated) = sink.finish(&mut buf).unwrap();
            let want = capped(&data, limit);
            assert!(
                std::fs::read(&path).unwrap() == want,
                "limit {limit} chunk {chunk}"
            );
            assert_eq!(
                (written, truncated),
                (want.len() as u64, data.len() > limit)
            );
        }
    }
}

#[test]
fn both_streams_of_64_mib_concurrently_without_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (pattern(64 << 20, 6), pattern((64 << 20) + 1, 7));
    let (in_a, in_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&in_a, &a).unwrap();
    std::fs::write(&in_b, &b).unwrap();
    let (out, err) = (dir.path().join("out.log"), dir.path().join("err.log"));
    // Interleave: both pipes fill while the other is being written.
    let script = "cat \"$1\" & cat \"$2\" >&2; wait";
    let (o, e) = run(script, &[&in_a, &in_b], spec(&out, None), spec(&err, None));
    assert!(std::fs::read(&out).unwrap() == a, "stdout differs");
    assert!(std::fs::read(&err).unwrap() == b, "stderr differs");
    assert_eq!((o.bytes, e.bytes), (a.len() as u64, b.len() as u64));
}

fn pipe() -> (File, OwnedFd) {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    (File::from(r), w)
}

#[test]
fn live_sink_gets_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(2 * 1024 * 1024 + 3, 8);
    let input = dir.path().join("in");
    std::fs::write(&input, &data).unwrap();
    let (mut live_r, live_w) = pipe();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        live_r.read_to_end(&mut got).unwrap();
        got
    });
    let log = dir.path().join("out.log");
    let out = LogSpec {
        path: log.clone(),
        limit: Some(1000),
        live: Live::Fd(live_w),
    };
    let (stats, _) = run(
        "cat \"$1\"",
        &[&input],
        out,
        spec(&dir.path().join("err.log"), None),
    );
    // The live sink is not capped, only the file is.
    assert!(reader.join().unwrap() == data, "live bytes differ");
    assert!(std::fs::read(&log).unwrap() == capped(&data, 1000));
    assert!(!stats.live_failed);
}

#[test]
fn closed_live_sink_does_not_stop_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(8 * 1024 * 1024, 9);
    let input = dir.path().join("in");
    std::fs::write(&input, &data).unwrap();
    let (mut live_r, live_w) = pipe();
    let reader = std::thread::spawn(move || {
        let mut first = [0; 10];
        live_r.read_exact(&mut first).unwrap();
        // Dropping the read end: the next write to the sink gets EPIPE.
    });
    let log = dir.path().join("out.log");
    let out = LogSpec {
        path: log.clone(),
        limit: None,
        live: Live::Fd(live_w),
    };
    let (stats, _) = run(
        "cat \"$1\"",
        &[&input],
        out,
        spec(&dir.path().join("err.log"), None),
    );
    reader.join().unwrap();
    assert!(std::fs::read(&log).unwrap() == data, "file incomplete");
    assert_eq!(stats.bytes, data.len() as u64);
    assert!(stats.live_failed);
}

#[test]
fn log_file_is_0644_and_replaces_an_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    std::fs::write(&log, "old content that is longer").unwrap();
    let (file, _) = {
        let (o, e) = run(
            "printf new",
            &[],
            spec(&log, None),
            spec(&dir.path().join("e"), None),
        );
        (std::fs::read(&log).unwrap(), (o, e))
    };
    assert_eq!(file, b"new");
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    // Whatever the umask takes away, nothing beyond 0644 is granted.
    assert_eq!(mode & !0o644, 0, "mode {mode:o}");
}

#[test]
fn create_error_names_the_path() {
    let (r, _w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let path = PathBuf::from("/nonexistent-dir/stdout.log");
    let err = pump(r, spec(&path, None)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot create log file `/nonexistent-dir/stdout.log`"
    );
    assert!(matches!(err, LogError::Create { .. }));
}
