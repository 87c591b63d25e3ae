//! `runner doctor`: what this host and this user can enforce, and how — from a real
//! probe (a contained `true` in a limited cgroup, [`crate::exec::probe`]) and the
//! host's facts — each missing piece with its fix.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cgroup::{CgroupFs, Version, systemd};
use crate::exec::Probe;
use crate::limits::{Enforcement, LimitKind};

#[derive(Debug, Serialize)]
pub struct Report {
    pub host: Host,
    pub user: User,
    pub cgroup: Cgroup,
    pub systemd: Systemd,
    pub containment: crate::contain::Report,
    pub rlimits: Vec<Rlimit>,
    pub gpus: Vec<String>,
    /// Engine CLIs the shipped flavors use: name → path, or null when not on PATH.
    pub engines: Vec<(String, Option<PathBuf>)>,
    /// Every limit of a launch can be enforced, and the step cannot undo it.
    pub ready: bool,
    /// What is missing, each with its fix.
    pub fixes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Host {
    pub os: String,
    pub kernel: String,
    pub cores: usize,
    pub memory_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct User {
    pub uid: u32,
    pub name: String,
    pub root: bool,
}

#[derive(Debug, Serialize)]
pub struct Cgroup {
    /// 1 (v1, or hybrid with controllers on v1) or 2 (unified).
    pub version: Option<u8>,
    pub hybrid: bool,
    pub nsdelegate: bool,
    /// This process's own cgroup.
    pub own: Option<PathBuf>,
    /// Where a run's cgroups go.
    pub placement: Option<String>,
    pub error: Option<String>,
    pub controllers: Vec<String>,
    /// memory, cpus, pids: how each is enforced, or why not.
    pub limits: Vec<LimitStatus>,
    /// A contained step started in a limited cgroup.
    pub started: bool,
}

#[derive(Debug, Serialize)]
pub struct LimitStatus {
    pub name: LimitKind,
    pub enforced_by: Option<Enforcement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Systemd {
    /// systemd is the init system.
    pub booted: bool,
    /// The manager a launch asks for a scope (system for root, else the user's).
    pub manager_socket: Option<PathBuf>,
    pub manager_reachable: bool,
    /// The user manager runs without a login (`loginctl enable-linger`).
    pub linger: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct Rlimit {
    pub name: &'static str,
    /// The hard limit a step's value must stay under; null when unlimited.
    pub hard: Option<u64>,
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .or_else(sysinfo::System::long_os_version)
        .unwrap_or_else(|| "unknown".into())
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// Look at this host and this user.
pub fn examine() -> Report {
    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    let host = Host {
        os: os_name(),
        kernel: sysinfo::System::kernel_version().unwrap_or_default(),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_bytes: sys.total_memory(),
    };
    let uid = nix::unistd::geteuid().as_raw();
    let user = User {
        uid,
        name: user_name(uid),
        root: uid == 0,
    };
    let fs = CgroupFs::detect();
    let probe: Probe = crate::exec::probe();
    let mut fixes = Vec::new();
    let cgroup = match &fs {
        Ok(fs) => Cgroup {
            version: Some(match fs.version() {
                Version::V1 => 1,
                Version::V2 => 2,
            }),
            hybrid: fs.version() == Version::V1 && fs.unified().is_some(),
            nsdelegate: fs.unified_tree().is_some_and(|u| u.nsdelegate),
            own: match fs.version() {
                Version::V1 => fs.v1_dir("memory").map(Path::to_path_buf),
                Version::V2 => fs.unified().map(Path::to_path_buf),
            },
            placement: probe.placement.clone().ok(),
            error: probe.placement.clone().err(),
            controllers: probe.controllers.clone(),
            limits: probe
                .limits
                .iter()
                .map(|(k, r)| LimitStatus {
                    name: *k,
                    enforced_by: r.as_ref().ok().copied(),
                    error: r.as_ref().err().cloned(),
                })
                .collect(),
            started: probe.started.is_ok(),
        },
        Err(e) => Cgroup {
            version: None,
            hybrid: false,
            nsdelegate: false,
            own: None,
            placement: None,
            error: Some(e.to_string()),
            controllers: Vec::new(),
            limits: Vec::new(),
            started: false,
        },
    };
    let manager = systemd::Manager::for_me();
    let socket = manager_socket(manager);
    let linger = (!user.root).then(|| {
        Path::new("/var/lib/systemd/linger")
            .join(&user.name)
            .exists()
    });
    let sd = Systemd {
        booted: systemd::booted(),
        manager_reachable: socket
            .as_ref()
            .is_some_and(|s| std::os::unix::net::UnixStream::connect(s).is_ok()),
        manager_socket: socket,
        linger,
    };
    if let Some(e) = &cgroup.error {
        fixes.push(format!("limits: {e}"));
    }
    for l in &cgroup.limits {
        if let Some(e) = &l.error {
            fixes.push(format!("limit `{}` cannot be enforced: {e}", l.name));
        }
    }
    if let Err(e) = &probe.started {
        fixes.push(format!("a contained step could not start: {e}"));
    }
    if !probe.containment.contained
        && let Some(why) = &probe.containment.reason
    {
        fixes.push(format!(
            "steps are not contained ({why}); without containment a step could raise its own limits — use `--best-effort-limits` to run that way"
        ));
    }
    if sd.booted && !user.root && linger == Some(false) && !sd.manager_reachable {
        fixes.push(format!(
            "your systemd user manager is not running: `loginctl enable-linger {}` keeps it running without a login",
            user.name
        ));
    }
    let rlimits = [
        ("open_files", nix::sys::resource::Resource::RLIMIT_NOFILE),
        ("cpu_time", nix::sys::resource::Resource::RLIMIT_CPU),
        ("file_size", nix::sys::resource::Resource::RLIMIT_FSIZE),
        ("core", nix::sys::resource::Resource::RLIMIT_CORE),
        ("address_space", nix::sys::resource::Resource::RLIMIT_AS),
    ]
    .into_iter()
    .map(|(name, r)| Rlimit {
        name,
        hard: nix::sys::resource::getrlimit(r)
            .ok()
            .map(|(_, h)| h)
            .filter(|h| *h != libc::RLIM_INFINITY),
    })
    .collect();
    let gpus = crate::limits::detect_gpus()
        .into_iter()
        .map(|g| format!("{}: {}", g.index, g.name))
        .collect();
    let engines = [
        "docker", "sbatch", "ray", "kubectl", "aws", "gcloud", "uv", "python3",
    ]
    .into_iter()
    .map(|e| (e.to_string(), which(e)))
    .collect();
    let ready = cgroup.limits.iter().all(|l| l.error.is_none())
        && !cgroup.limits.is_empty()
        && cgroup.started
        && probe.containment.contained;
    Report {
        host,
        user,
        cgroup,
        systemd: sd,
        containment: probe.containment,
        rlimits,
        gpus,
        engines,
        ready,
        fixes,
    }
}

fn manager_socket(m: systemd::Manager) -> Option<PathBuf> {
    match m {
        systemd::Manager::System => Some(PathBuf::from("/run/systemd/private")),
        systemd::Manager::User => {
            let runtime = std::env::var_os("XDG_RUNTIME_DIR")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(format!("/run/user/{}", nix::unistd::geteuid())));
            Some(runtime.join("systemd/private"))
        }
    }
}

/// The report for people, at most 80 columns.
pub fn human(r: &Report) -> String {
    use crate::units::Bytes;
    let mut out = String::new();
    let mut line = |label: &str, text: String| {
        out.push_str(&wrap(&format!("{label:<12}{text}"), 12));
    };
    line(
        "host",
        format!(
            "{} · kernel {} · {} cores · {}",
            r.host.os,
            r.host.kernel,
            r.host.cores,
            Bytes(r.host.memory_bytes)
        ),
    );
    line("user", format!("{} (uid {})", r.user.name, r.user.uid));
    let c = &r.cgroup;
    line(
        "cgroup",
        match c.version {
            Some(2) => format!("v2{}", if c.nsdelegate { ", nsdelegate" } else { "" }),
            Some(_) if c.hybrid => "v1 (hybrid: controllers on v1)".to_string(),
            Some(_) => "v1".to_string(),
            None => "none".to_string(),
        },
    );
    if let Some(own) = &c.own {
        line("  own", own.display().to_string());
    }
    line(
        "  runs go",
        c.placement
            .clone()
            .unwrap_or_else(|| "nowhere: see below".into()),
    );
    if !c.controllers.is_empty() {
        line("  can use", c.controllers.join(" "));
    }
    let limits: Vec<String> = c
        .limits
        .iter()
        .map(|l| match l.enforced_by {
            Some(e) => format!(
                "{} ✓ {}",
                l.name,
                serde_json::to_value(e)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            ),
            None => format!("{} ✗", l.name),
        })
        .collect();
    line("limits", limits.join(" · "));
    line(
        "containment",
        format!(
            "{}{}",
            r.containment.mode,
            if r.containment.contained {
                ": the step cannot undo its limits".to_string()
            } else {
                format!(
                    ": not contained ({})",
                    r.containment.reason.clone().unwrap_or_default()
                )
            }
        ),
    );
    let s = &r.systemd;
    line(
        "systemd",
        if !s.booted {
            "not the init system".to_string()
        } else {
            format!(
                "{}{}",
                if s.manager_reachable {
                    "manager reachable"
                } else {
                    "manager not reachable"
                },
                match s.linger {
                    Some(true) => " · linger on",
                    Some(false) => " · linger off",
                    None => "",
                }
            )
        },
    );
    let rl: Vec<String> = r
        .rlimits
        .iter()
        .map(|l| match l.hard {
            Some(h) => format!("{} ≤ {h}", l.name),
            None => format!("{} any", l.name),
        })
        .collect();
    line("rlimits", rl.join(" · "));
    line(
        "gpus",
        if r.gpus.is_empty() {
            "none detected".to_string()
        } else {
            r.gpus.join(", ")
        },
    );
    let found: Vec<&str> = r
        .engines
        .iter()
        .filter(|(_, p)| p.is_some())
        .map(|(n, _)| n.as_str())
        .collect();
    let missing: Vec<&str> = r
        .engines
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(n, _)| n.as_str())
        .collect();
    line(
        "on PATH",
        if found.is_empty() {
            "none of the engines".to_string()
        } else {
            found.join(" ")
        },
    );
    if !missing.is_empty() {
        line("not found", missing.join(" "));
    }
    if r.ready {
        out.push_str("ready: every limit is enforced, and the step cannot undo it\n");
    } else {
        out.push_str("not ready:\n");
        for f in &r.fixes {
            out.push_str(&wrap(&format!("  - {f}"), 4));
        }
        if r.fixes.is_empty() {
            out.push_str("  - see the lines above\n");
        }
    }
    out
}

/// `text` wrapped at 80 columns on spaces, later lines indented by `indent`; a line.
fn wrap(text: &str, indent: usize) -> String {
    let mut out = crate::wrap::words(text, crate::wrap::WIDTH, &" ".repeat(indent));
    out.push('\n');
    out
}
