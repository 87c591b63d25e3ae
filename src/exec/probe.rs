//! A real, tiny launch for `runner doctor`: the run root this process would get, a
//! stage cgroup with a memory, cpu and pids limit, and `true` started in it under the
//! containment a step would get — so what doctor reports is what a launch would do,
//! not a guess from configuration.

use std::collections::BTreeMap;
use std::path::Path;

use super::spawn::{self, Spec};
use crate::cgroup::{self, RunRoot};
use crate::contain::{self, Contain};
use crate::limits::{Enforcement, LimitKind};

/// What the probe found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Probe {
    /// How the run's cgroups were placed, or why they could not be.
    pub placement: Result<String, String>,
    /// Controllers the run's cgroups can use.
    pub controllers: Vec<String>,
    /// Each limit, and how it was enforced (or why not).
    pub limits: Vec<(LimitKind, Result<Enforcement, String>)>,
    pub containment: contain::Report,
    /// A contained `true` started in the stage cgroup and exited 0.
    pub started: Result<(), String>,
}

/// Run the probe.
pub fn probe() -> Probe {
    let fs = match super::arm::cgroup_fs() {
        Ok(fs) => fs,
        Err(e) => return Probe::failed(super::arm::with_hints(&e)),
    };
    let run = format!("doctor-{}", crate::util::new_run_id("probe"));
    let mut root = match RunRoot::acquire(&fs, &run) {
        Ok(r) => r,
        Err(e) => return Probe::failed(super::arm::with_hints(&e)),
    };
    let controllers = root_controllers(&root);
    let mut limits = Vec::new();
    let req = cgroup::Request {
        memory: Some(64 << 20),
        cpus: Some(0.5),
        pids: Some(64),
    };
    // Each limit on its own, so one missing controller does not hide the others.
    for (kind, one) in [
        (
            LimitKind::Memory,
            cgroup::Request {
                memory: req.memory,
                ..Default::default()
            },
        ),
        (
            LimitKind::Cpus,
            cgroup::Request {
                cpus: req.cpus,
                ..Default::default()
            },
        ),
        (
            LimitKind::Pids,
            cgroup::Request {
                pids: req.pids,
                ..Default::default()
            },
        ),
    ] {
        let got = root
            .create(&format!("probe-{kind}"), &one)
            .map_err(|e| crate::diag::error_chain(&e))
            .and_then(|cg| {
                let how = cg
                    .enforcement()
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .map(|(_, e)| *e)
                    .ok_or_else(|| "not enforced".to_string());
                cg.remove().map_err(|e| e.to_string())?;
                how
            });
        limits.push((kind, got));
    }
    let (contain, containment) = match Contain::prepare(root.fs(), &[], &[]) {
        Ok(c) => c,
        Err(why) => (
            Contain::none(),
            contain::Report {
                mode: "none".into(),
                contained: false,
                reason: Some(why),
            },
        ),
    };
    let started = start_true(&root, &req, &contain);
    let placement = Ok(root.placement().describe().to_string());
    root.release();
    Probe {
        placement,
        controllers,
        limits,
        containment,
        started,
    }
}

impl Probe {
    fn failed(why: String) -> Probe {
        Probe {
            placement: Err(why.clone()),
            controllers: Vec::new(),
            limits: LimitKind::CGROUP
                .iter()
                .map(|k| (*k, Err("no cgroup for runs".to_string())))
                .collect(),
            containment: contain::Report {
                mode: "none".into(),
                contained: false,
                reason: Some(why),
            },
            started: Err("no cgroup for runs".into()),
        }
    }
}

fn root_controllers(root: &RunRoot) -> Vec<String> {
    root.subtree_controllers()
}

/// `true` in a stage cgroup with every limit, under the step's containment.
fn start_true(root: &RunRoot, req: &cgroup::Request, contain: &Contain) -> Result<(), String> {
    let cg = root
        .create("probe-launch", req)
        .map_err(|e| crate::diag::error_chain(&e))?;
    let (_r1, w1) = super::child::pipe().map_err(|e| e.to_string())?;
    let (_r2, w2) = super::child::pipe().map_err(|e| e.to_string())?;
    let env = BTreeMap::new();
    let spawned = spawn::spawn(Spec {
        argv: vec!["true".into()],
        env: &env,
        withhold: &[],
        cwd: Path::new("/"),
        stdin: false,
        stdout: w1,
        stderr: w2,
        rlimits: None,
        cgroup: Some(&cg),
        contain,
    });
    let result = match spawned {
        Ok(s) => {
            use nix::sys::wait::{WaitStatus, waitpid};
            match waitpid(nix::unistd::Pid::from_raw(s.pid), None) {
                Ok(WaitStatus::Exited(_, 0)) => Ok(()),
                other => Err(format!("`true` ended with {other:?}")),
            }
        }
        Err(e) => Err(crate::diag::error_chain(&e)),
    };
    let _ = cg.remove();
    result
}
