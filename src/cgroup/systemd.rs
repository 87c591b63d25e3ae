//! Asking systemd for a delegated cgroup: one `StartTransientUnit` call that makes a
//! scope with `Delegate=yes` holding this process, the way `systemd-run --scope
//! -p Delegate=yes` (and podman's and crun's systemd cgroup managers) do — the system
//! manager for root, the user manager for anyone else.
//!
//! The D-Bus needed is one method call and its reply, so the client is written here:
//! EXTERNAL authentication on systemd's private socket (no bus daemon is needed; the
//! message bus is the fallback), the header and body marshalled per the D-Bus
//! specification. (zbus, the maintained pure-Rust D-Bus crate, has only an async API
//! in its current version and brings its own runtime — 58 crates and a minute of
//! release build — for this one call.)

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long systemd gets to answer and to move us into the new scope (a loaded
/// machine, or a guest under emulation, takes well under a second).
const TIMEOUT: Duration = Duration::from_secs(15);

/// Which manager to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    System,
    /// The user's own manager (`user@UID.service`).
    User,
}

impl Manager {
    /// The manager for this process: the system's for root, the user's otherwise.
    pub fn for_me() -> Manager {
        if nix::unistd::geteuid().is_root() {
            Manager::System
        } else {
            Manager::User
        }
    }

    /// Sockets to try, in order, and whether each is a bus (which wants a `Hello`).
    fn sockets(self) -> Vec<(PathBuf, bool)> {
        match self {
            Manager::System => vec![
                (PathBuf::from("/run/systemd/private"), false),
                (PathBuf::from("/run/dbus/system_bus_socket"), true),
            ],
            Manager::User => {
                let runtime = std::env::var_os("XDG_RUNTIME_DIR")
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| {
                        PathBuf::from(format!("/run/user/{}", nix::unistd::geteuid()))
                    });
                vec![
                    (runtime.join("systemd/private"), false),
                    (runtime.join("bus"), true),
                ]
            }
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Manager::System => "the system's systemd",
            Manager::User => "your user's systemd (user@UID.service)",
        }
    }
}

/// Is systemd the init system (its runtime folder exists, as `sd_booted` checks)?
pub fn booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("cannot reach {manager}: no socket at {sockets}")]
    Unreachable {
        manager: &'static str,
        sockets: String,
        #[source]
        source: io::Error,
    },
    #[error("talking to systemd over `{socket}` failed")]
    Io {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("systemd refused the scope: {name}: {message}")]
    Refused { name: String, message: String },
    #[error("unexpected answer from systemd: {0}")]
    Protocol(String),
    #[error("systemd did not move this process into `{unit}` within {secs} s")]
    NotMoved { unit: String, secs: u64 },
}

/// Create the transient scope `unit` (e.g. `steprunner-RUN.scope`) holding this process,
/// with `Delegate=yes`, and wait until this process is in it. Returns its cgroup path
/// (as in `/proc/self/cgroup`).
pub fn start_delegated_scope(
    manager: Manager,
    unit: &str,
    description: &str,
) -> Result<String, SystemdError> {
    let mut conn = Connection::open(manager)?;
    // 0: the caller, as the kernel tells systemd through the socket — right in any PID
    // namespace, where this process's own pid number would name another process.
    let pid = 0u32;
    let mut body = Writer::default();
    body.string(unit);
    body.string("fail");
    // a(sv): the unit's properties.
    body.array(8, |w| {
        w.property("Description", "s", |w| w.string(description));
        w.property("PIDs", "au", |w| w.array(4, |w| w.u32(pid)));
        w.property("Delegate", "b", |w| w.u32(1));
        // Gone as soon as it ends, even if it failed: nothing left to `reset-failed`.
        w.property("CollectMode", "s", |w| w.string("inactive-or-failed"));
    });
    // a(sa(sv)): no auxiliary units.
    body.array(8, |_| {});
    conn.call(&Call {
        path: "/org/freedesktop/systemd1",
        interface: "org.freedesktop.systemd1.Manager",
        member: "StartTransientUnit",
        signature: "ssa(sv)a(sa(sv))",
        body: &body.buf,
    })?;
    // The job moves us when it runs, just after the reply.
    let deadline = Instant::now() + TIMEOUT;
    let suffix = format!("/{unit}");
    loop {
        if let Ok(text) = std::fs::read_to_string("/proc/self/cgroup")
            && let Some(path) = text
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .filter(|p| p.ends_with(&suffix))
        {
            return Ok(path.to_string());
        }
        if Instant::now() > deadline {
            return Err(SystemdError::NotMoved {
                unit: unit.to_string(),
                secs: TIMEOUT.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Does `unit` (a `.service` or `.scope` of `manager`) have `Delegate=yes`? Asked of
/// the manager: its `Delegate` property. For cgroups the manager does not mark (the
/// user manager of systemd 252 sets no `delegate` attribute on what it delegates).
pub fn unit_delegated(manager: Manager, unit: &str) -> Result<bool, SystemdError> {
    let interface = if unit.ends_with(".scope") {
        "org.freedesktop.systemd1.Scope"
    } else {
        "org.freedesktop.systemd1.Service"
    };
    let mut body = Writer::default();
    body.string(interface);
    body.string("Delegate");
    let reply = Connection::open(manager)?.call(&Call {
        path: &unit_path(unit),
        interface: "org.freedesktop.DBus.Properties",
        member: "Get",
        signature: "ss",
        body: &body.buf,
    })?;
    reply
        .variant_bool
        .ok_or_else(|| SystemdError::Protocol("`Delegate` is not a boolean".into()))
}

/// A unit's object path, its name escaped as sd-bus does: every byte but an ASCII
/// letter (or a digit after the first) as `_xx`.
fn unit_path(unit: &str) -> String {
    let mut path = String::from("/org/freedesktop/systemd1/unit/");
    for (i, b) in unit.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()) {
            path.push(b as char);
        } else {
            path.push_str(&format!("_{b:02x}"));
        }
    }
    path
}

/// One connection to a manager. The handshake is pipelined as sd-bus does it: the
/// authentication, `BEGIN`, the bus's `Hello` and the first call leave in one write,
/// and the answers are read in order — one round trip to the manager instead of two
/// (three through the message bus; systemd is PID 1: each trip wakes its event loop).
struct Connection {
    stream: UnixStream,
    socket: PathBuf,
    bus: bool,
    serial: u32,
    /// Bytes read past what has been parsed.
    pending: Vec<u8>,
    /// Written but not yet sent (the handshake, until the first call joins it).
    unsent: Vec<u8>,
    /// The server's `OK` has been read.
    authenticated: bool,
}

impl Connection {
    fn open(manager: Manager) -> Result<Connection, SystemdError> {
        let mut last = None;
        let sockets = manager.sockets();
        for (path, bus) in &sockets {
            match UnixStream::connect(path) {
                Ok(stream) => return Ok(Connection::new(stream, path.clone(), *bus)),
                Err(e) => last = Some(e),
            }
        }
        Err(SystemdError::Unreachable {
            manager: manager.describe(),
            sockets: sockets
                .iter()
                .map(|(p, _)| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(" or "),
            source: last.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)),
        })
    }

    /// A connected stream, its handshake queued.
    fn new(stream: UnixStream, socket: PathBuf, bus: bool) -> Connection {
        let _ = stream.set_read_timeout(Some(TIMEOUT));
        // SASL EXTERNAL: the kernel tells the server who we are; we name the same uid.
        let uid = nix::unistd::geteuid().as_raw().to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        let mut c = Connection {
            stream,
            socket,
            bus,
            serial: 0,
            pending: Vec::new(),
            unsent: format!("\0AUTH EXTERNAL {hex}\r\nBEGIN\r\n").into_bytes(),
            authenticated: false,
        };
        if bus {
            c.send(&Call {
                path: "/org/freedesktop/DBus",
                interface: "org.freedesktop.DBus",
                member: "Hello",
                signature: "",
                body: &[],
            });
        }
        c
    }

    fn io(&self, source: io::Error) -> SystemdError {
        SystemdError::Io {
            socket: self.socket.clone(),
            source,
        }
    }

    /// More bytes from the socket into `pending`.
    fn fill(&mut self) -> Result<(), SystemdError> {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(self.io(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Result<Vec<u8>, SystemdError> {
        while self.pending.len() < n {
            self.fill()?;
        }
        let rest = self.pending.split_off(n);
        Ok(std::mem::replace(&mut self.pending, rest))
    }

    /// The server's answer to the authentication: `OK <guid>`, or why not.
    fn authenticated(&mut self) -> Result<(), SystemdError> {
        if self.authenticated {
            return Ok(());
        }
        let end = loop {
            if let Some(i) = self.pending.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if self.pending.len() > 4096 {
                return Err(SystemdError::Protocol("an over-long line".into()));
            }
            self.fill()?;
        };
        let line = String::from_utf8_lossy(&self.take(end + 2)?).into_owned();
        if !line.starts_with("OK ") {
            return Err(SystemdError::Protocol(format!(
                "authentication refused: `{}`",
                line.trim_end()
            )));
        }
        self.authenticated = true;
        Ok(())
    }

    /// Queue a call of a method of systemd's manager object (or the bus's); returns its
    /// serial.
    fn send(&mut self, call: &Call<'_>) -> u32 {
        self.serial += 1;
        let destination = if self.bus && call.interface == "org.freedesktop.DBus" {
            "org.freedesktop.DBus"
        } else {
            "org.freedesktop.systemd1"
        };
        self.unsent.extend(call.encode(self.serial, destination));
        self.serial
    }

    /// Call a method and wait for its reply (what was queued before goes with it).
    fn call(&mut self, call: &Call<'_>) -> Result<Message, SystemdError> {
        let serial = self.send(call);
        let out = std::mem::take(&mut self.unsent);
        self.stream.write_all(&out).map_err(|e| self.io(e))?;
        self.authenticated()?;
        loop {
            let reply = self.read_message()?;
            // Signals the bus may send, and replies to what was queued before
            // (`Hello`), are not ours; an error to those is the answer, though.
            if reply.reply_serial != Some(serial) && reply.kind != MSG_ERROR {
                continue;
            }
            return match reply.kind {
                MSG_METHOD_RETURN => Ok(reply),
                MSG_ERROR => Err(SystemdError::Refused {
                    name: reply.error_name.unwrap_or_default(),
                    message: reply.first_string.unwrap_or_default(),
                }),
                k => Err(SystemdError::Protocol(format!("message type {k}"))),
            };
        }
    }

    fn read_message(&mut self) -> Result<Message, SystemdError> {
        let fixed: [u8; 16] = self.take(16)?.try_into().expect("16 bytes");
        let (body_len, fields_len) = message_lengths(&fixed)?;
        let header_end = 16 + fields_len;
        let total = pad8(header_end) + body_len;
        if total > 1 << 20 {
            return Err(SystemdError::Protocol(format!("a {total}-byte message")));
        }
        let mut all = fixed.to_vec();
        all.extend(self.take(total - 16)?);
        parse_message(&all)
    }
}

const MSG_METHOD_CALL: u8 = 1;
const MSG_METHOD_RETURN: u8 = 2;
const MSG_ERROR: u8 = 3;

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// D-Bus marshalling, little-endian, into one buffer (offsets are from its start, as
/// alignment is).
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn align(&mut self, n: usize) {
        while !self.buf.len().is_multiple_of(n) {
            self.buf.push(0);
        }
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    fn u32(&mut self, v: u32) {
        self.align(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// `s` and `o`.
    fn string(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    /// `g`.
    fn signature(&mut self, s: &str) {
        self.u8(s.len() as u8);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    /// An array whose elements align to `element_align`; its length counts the bytes
    /// from the first element on.
    fn array(&mut self, element_align: usize, items: impl FnOnce(&mut Writer)) {
        self.u32(0);
        let len_at = self.buf.len() - 4;
        self.align(element_align);
        let start = self.buf.len();
        items(self);
        let len = (self.buf.len() - start) as u32;
        self.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// One `(sv)` of a property list.
    fn property(&mut self, name: &str, signature: &str, value: impl FnOnce(&mut Writer)) {
        self.align(8);
        self.string(name);
        self.signature(signature);
        value(self);
    }

    /// One `(yv)` header field.
    fn field(&mut self, code: u8, signature: &str, value: impl FnOnce(&mut Writer)) {
        self.align(8);
        self.u8(code);
        self.signature(signature);
        value(self);
    }
}

/// One method call: what to call and with what.
struct Call<'a> {
    path: &'a str,
    interface: &'a str,
    member: &'a str,
    /// The body's signature (empty: no body).
    signature: &'a str,
    body: &'a [u8],
}

impl Call<'_> {
    /// The message on the wire, with its serial, sent to `destination`.
    fn encode(&self, serial: u32, destination: &str) -> Vec<u8> {
        let Call {
            path,
            interface,
            member,
            signature,
            body,
        } = *self;
        frame(MSG_METHOD_CALL, 0, serial, signature, body, |w| {
            w.field(1, "o", |w| w.string(path));
            w.field(2, "s", |w| w.string(interface));
            w.field(3, "s", |w| w.string(member));
            w.field(6, "s", |w| w.string(destination));
        })
    }
}

/// A whole message: the fixed header (little-endian, `kind`, `flags`, version 1), the
/// header fields `fields` writes and the body's signature (when there is a body), then
/// the body.
fn frame(
    kind: u8,
    flags: u8,
    serial: u32,
    signature: &str,
    body: &[u8],
    fields: impl FnOnce(&mut Writer),
) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(b'l');
    w.u8(kind);
    w.u8(flags);
    w.u8(1);
    w.u32(body.len() as u32);
    w.u32(serial);
    w.array(8, |w| {
        fields(w);
        if !signature.is_empty() {
            w.field(8, "g", |w| w.signature(signature));
        }
    });
    w.align(8);
    w.buf.extend_from_slice(body);
    w.buf
}

/// What a reply says, as far as this client cares.
#[derive(Debug, Default, PartialEq)]
struct Message {
    kind: u8,
    reply_serial: Option<u32>,
    error_name: Option<String>,
    /// The body's first value, when it is a string (an error's message).
    first_string: Option<String>,
    /// The body's value, when it is a variant holding a boolean (a property's).
    variant_bool: Option<bool>,
}

fn message_lengths(fixed: &[u8; 16]) -> Result<(usize, usize), SystemdError> {
    if fixed[0] != b'l' {
        return Err(SystemdError::Protocol("a big-endian message".into()));
    }
    let u = |i: usize| u32::from_le_bytes(fixed[i..i + 4].try_into().expect("4 bytes")) as usize;
    Ok((u(4), u(12)))
}

/// Parse a whole little-endian message.
fn parse_message(m: &[u8]) -> Result<Message, SystemdError> {
    let bad = |what: &str| SystemdError::Protocol(format!("a malformed message ({what})"));
    let fixed: &[u8; 16] = m
        .get(..16)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| bad("short"))?;
    let (_, fields_len) = message_lengths(fixed)?;
    let mut r = Reader { m, at: 16 };
    let end = 16 + fields_len;
    let mut out = Message {
        kind: m[1],
        ..Message::default()
    };
    let mut body_sig = String::new();
    while r.at < end {
        r.align(8);
        if r.at >= end {
            break;
        }
        let code = r.u8().ok_or_else(|| bad("field code"))?;
        let sig = r.signature().ok_or_else(|| bad("field signature"))?;
        match (code, sig.as_str()) {
            (4, "s") => out.error_name = Some(r.string().ok_or_else(|| bad("error name"))?),
            (5, "u") => out.reply_serial = Some(r.u32().ok_or_else(|| bad("reply serial"))?),
            (8, "g") => body_sig = r.signature().ok_or_else(|| bad("body signature"))?,
            (_, "s" | "o") => {
                r.string().ok_or_else(|| bad("string field"))?;
            }
            (_, "g") => {
                r.signature().ok_or_else(|| bad("signature field"))?;
            }
            (_, "u") => {
                r.u32().ok_or_else(|| bad("u32 field"))?;
            }
            _ => return Err(bad("unknown field type")),
        }
    }
    r.at = pad8(end);
    if body_sig.starts_with('s') {
        out.first_string = r.string();
    } else if body_sig == "v" && r.signature().as_deref() == Some("b") {
        out.variant_bool = r.u32().map(|v| v != 0);
    }
    Ok(out)
}

struct Reader<'a> {
    m: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn align(&mut self, n: usize) {
        self.at = self.at.div_ceil(n) * n;
    }

    fn u8(&mut self) -> Option<u8> {
        let v = *self.m.get(self.at)?;
        self.at += 1;
        Some(v)
    }

    fn u32(&mut self) -> Option<u32> {
        self.align(4);
        let v = u32::from_le_bytes(self.m.get(self.at..self.at + 4)?.try_into().ok()?);
        self.at += 4;
        Some(v)
    }

    fn string(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        let s = self.m.get(self.at..self.at.checked_add(len)?)?;
        self.at += len + 1;
        Some(String::from_utf8_lossy(s).into_owned())
    }

    fn signature(&mut self) -> Option<String> {
        let len = self.u8()? as usize;
        let s = self.m.get(self.at..self.at + len)?;
        self.at += len + 1;
        Some(String::from_utf8_lossy(s).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call with nothing in it, for the tests of the exchange.
    const M: Call<'static> = Call {
        path: "/o",
        interface: "i.f",
        member: "M",
        signature: "",
        body: &[],
    };

    /// The `Hello` call of the D-Bus specification's examples, byte for byte as
    /// `dbus-send`/sd-bus put it on the wire (serial 1, no body).
    #[test]
    fn a_method_call_is_marshalled_as_the_specification_says() {
        let msg = Call {
            path: "/org/freedesktop/DBus",
            interface: "org.freedesktop.DBus",
            member: "Hello",
            signature: "",
            body: &[],
        }
        .encode(1, "org.freedesktop.DBus");
        let mut want = vec![b'l', 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0];
        let fields: &[(u8, &str)] = &[
            (1, "/org/freedesktop/DBus"),
            (2, "org.freedesktop.DBus"),
            (3, "Hello"),
            (6, "org.freedesktop.DBus"),
        ];
        let mut f = Vec::new();
        for (code, s) in fields {
            while (16 + f.len()) % 8 != 0 {
                f.push(0);
            }
            let sig = if *code == 1 { b'o' } else { b's' };
            f.extend([*code, 1, sig, 0]);
            f.extend((s.len() as u32).to_le_bytes());
            f.extend(s.as_bytes());
            f.push(0);
        }
        want.extend((f.len() as u32).to_le_bytes());
        want.extend(&f);
        while want.len() % 8 != 0 {
            want.push(0);
        }
        assert_eq!(msg, want);
    }

    #[test]
    fn properties_align_each_struct_to_eight() {
        let mut w = Writer::default();
        w.string("x.scope");
        w.array(8, |w| {
            w.property("Delegate", "b", |w| w.u32(1));
            w.property("PIDs", "au", |w| w.array(4, |w| w.u32(42)));
        });
        let b = &w.buf;
        // "x.scope": length 7, 8 bytes with the NUL: the array length sits at 12.
        assert_eq!(&b[0..4], &7u32.to_le_bytes());
        let len = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
        // The first struct starts at 16 (already aligned), the array ends the buffer.
        assert_eq!(16 + len, b.len());
        // "Delegate" (4 + 8 + 1), signature "b" (3), then the boolean aligned to 4.
        assert_eq!(&b[16..20], &8u32.to_le_bytes());
        assert_eq!(&b[29..32], &[1, b'b', 0]);
        assert_eq!(&b[32..36], &1u32.to_le_bytes());
        // The second struct aligned to 40; its `au` holds one 42.
        assert_eq!(&b[40..44], &4u32.to_le_bytes());
        assert_eq!(&b[b.len() - 4..], &42u32.to_le_bytes());
    }

    /// A message of `kind` answering `serial`, as sd-bus lays one out: an error name when
    /// given, a body of `signature` (none when empty).
    fn message(
        kind: u8,
        serial: u32,
        error_name: Option<&str>,
        signature: &str,
        body: &[u8],
    ) -> Vec<u8> {
        // Flags 1: no reply expected.
        frame(kind, 1, 90 + serial, signature, body, |w| {
            if let Some(name) = error_name {
                w.field(4, "s", |w| w.string(name));
            }
            w.field(5, "u", |w| w.u32(serial));
        })
    }

    /// A reply of `kind` to `serial` (an error carries a name and a message).
    fn reply(kind: u8, serial: u32) -> Vec<u8> {
        if kind != MSG_ERROR {
            return message(kind, serial, None, "", &[]);
        }
        let mut body = Writer::default();
        body.string("Access denied");
        let name = "org.freedesktop.DBus.Error.AccessDenied";
        message(kind, serial, Some(name), "s", &body.buf)
    }

    /// A server on the other end of a socket pair: it reads what the client sends
    /// (until `want` bytes arrived, each read counted), then writes `answer`, a
    /// byte at a time when `slowly`.
    fn server(
        want: usize,
        answer: Vec<u8>,
        slowly: bool,
    ) -> (Connection, std::thread::JoinHandle<(Vec<u8>, usize)>) {
        let (client, mut server) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut reads = 0;
            let mut buf = [0u8; 8192];
            while got.len() < want {
                let n = server.read(&mut buf).unwrap();
                assert!(n > 0, "the client closed after {} bytes", got.len());
                got.extend_from_slice(&buf[..n]);
                reads += 1;
            }
            if slowly {
                for b in answer {
                    server.write_all(&[b]).unwrap();
                }
            } else {
                server.write_all(&answer).unwrap();
            }
            (got, reads)
        });
        (Connection::new(client, PathBuf::from("test"), false), t)
    }

    fn handshake_len() -> usize {
        let uid = nix::unistd::geteuid().as_raw().to_string();
        "\0AUTH EXTERNAL \r\nBEGIN\r\n".len() + 2 * uid.len()
    }

    #[test]
    fn the_handshake_and_the_call_leave_in_one_write_and_answers_are_read_in_any_pieces() {
        let call = M.encode(1, "org.freedesktop.systemd1");
        for slowly in [false, true] {
            let mut answer = b"OK 0123456789abcdef0123456789abcdef\r\n".to_vec();
            answer.extend(reply(MSG_METHOD_RETURN, 1));
            let (mut c, t) = server(handshake_len() + call.len(), answer, slowly);
            c.call(&M).unwrap();
            let (got, reads) = t.join().unwrap();
            assert_eq!(reads, 1, "the handshake and the call came in {reads} reads");
            assert!(got.starts_with(b"\0AUTH EXTERNAL "), "{got:?}");
            assert!(got.ends_with(&call), "the call follows BEGIN");
        }
    }

    #[test]
    fn a_refused_authentication_and_an_error_reply_are_said() {
        let call_len = M.encode(1, "org.freedesktop.systemd1").len();
        let (mut c, t) = server(
            handshake_len() + call_len,
            b"REJECTED EXTERNAL\r\n".to_vec(),
            false,
        );
        let e = c.call(&M).unwrap_err();
        t.join().unwrap();
        assert!(
            e.to_string()
                .contains("authentication refused: `REJECTED EXTERNAL`"),
            "{e}"
        );

        let mut answer = b"OK 0123456789abcdef0123456789abcdef\r\n".to_vec();
        answer.extend(reply(MSG_ERROR, 1));
        let (mut c, t) = server(handshake_len() + call_len, answer, false);
        let e = c.call(&M).unwrap_err();
        t.join().unwrap();
        assert!(
            matches!(&e, SystemdError::Refused { name, message }
                if name == "org.freedesktop.DBus.Error.AccessDenied" && message == "Access denied"),
            "{e:?}"
        );

        // The server hangs up before answering: an error, not a hang or a panic.
        let (mut c, t) = server(handshake_len() + call_len, Vec::new(), false);
        let e = c.call(&M).unwrap_err();
        t.join().unwrap();
        assert!(matches!(e, SystemdError::Io { .. }), "{e:?}");
    }

    #[test]
    fn unit_paths_are_escaped_as_sd_bus_does() {
        assert_eq!(
            unit_path("run-u0.service"),
            "/org/freedesktop/systemd1/unit/run_2du0_2eservice"
        );
        assert_eq!(
            unit_path("user@1001.service"),
            "/org/freedesktop/systemd1/unit/user_401001_2eservice"
        );
        assert_eq!(
            unit_path("0a.scope"),
            "/org/freedesktop/systemd1/unit/_30a_2escope"
        );
    }

    #[test]
    fn a_property_reply_holding_a_boolean_is_read() {
        for (value, want) in [(1u32, true), (0, false)] {
            let mut body = Writer::default();
            body.signature("b");
            body.u32(value);
            let m = message(MSG_METHOD_RETURN, 2, None, "v", &body.buf);
            assert_eq!(parse_message(&m).unwrap().variant_bool, Some(want));
        }
    }

    #[test]
    fn replies_and_errors_are_read() {
        // An error reply, as sd-bus sends one: ERROR_NAME, REPLY_SERIAL, SIGNATURE "s".
        let buf = reply(MSG_ERROR, 3);
        let m = parse_message(&buf).unwrap();
        assert_eq!(
            m,
            Message {
                kind: MSG_ERROR,
                reply_serial: Some(3),
                error_name: Some("org.freedesktop.DBus.Error.AccessDenied".into()),
                first_string: Some("Access denied".into()),
                variant_bool: None,
            }
        );
        // Truncated or garbled input is an error, never a panic.
        for cut in 0..buf.len() {
            let _ = parse_message(&buf[..cut]);
        }
        let mut garbled = buf.clone();
        garbled[16 + 4] = 200;
        let _ = parse_message(&garbled);
    }
}
