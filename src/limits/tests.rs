//! Rlimit checks and real children under rlimits; GPU parsing and selection; capacity.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use nix::sys::resource::{Resource, getrlimit};

use super::*;
use crate::cgroup::tests_real::{python, real_tests_enabled, spawn};

#[test]
fn check_refuses_values_above_the_hard_limit() {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert_ne!(
        hard,
        libc::RLIM_INFINITY,
        "RLIMIT_NOFILE hard is always finite"
    );
    let too_many = {
        let mut r = Rlimits::default();
        r.set(LimitKind::OpenFiles, hard + 1);
        r
    };
    let err = too_many.check().unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("`open_files`"), "{msg}");
    assert!(msg.contains(&(hard + 1).to_string()), "{msg}");
    assert!(msg.contains(&format!("hard limit {hard}")), "{msg}");
    let fine = {
        let mut r = Rlimits::default();
        r.set(LimitKind::OpenFiles, hard);
        r.set(LimitKind::CpuTime, 10);
        r
    };
    fine.check().unwrap();
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn real_open_files_limit_makes_the_17th_open_fail() {
    if !real_tests_enabled("real_open_files_limit_makes_the_17th_open_fail") {
        return;
    }
    let rl = {
        let mut r = Rlimits::default();
        r.set(LimitKind::OpenFiles, 16);
        r
    };
    rl.check().unwrap();
    let script = "\
import os
fds = []
try:
    while True:
        fds.append(os.open('/dev/null', os.O_RDONLY))
except OSError as e:
    print(e.errno, max(fds))
";
    let child = spawn(
        None,
        &rl,
        Command::new(python())
            .args(["-c", script])
            .stdout(Stdio::piped()),
    );
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // EMFILE (24) once fd 15, the 16th, is taken: the 17th descriptor cannot exist.
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "24 15");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root (cgroups, mounts)")]
fn real_file_size_limit_sends_sigxfsz() {
    if !real_tests_enabled("real_file_size_limit_sends_sigxfsz") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("big");
    let rl = {
        let mut r = Rlimits::default();
        r.set(LimitKind::FileSize, 4096);
        r
    };
    let mut child = spawn(
        None,
        &rl,
        Command::new("dd")
            .args(["if=/dev/zero", "bs=1024", "count=64"])
            .arg(format!("of={}", file.display()))
            .stderr(Stdio::null()),
    );
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGXFSZ), "{status:?}");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 4096);
}

const SMI_L: &str = "\
GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-4a5f8c2e-1111-2222-3333-444455556666)
  MIG 1g.5gb      Device  0: (UUID: MIG-aaaa)
GPU 1: Tesla T4 (UUID: GPU-bbbbbbbb-1111-2222-3333-444455556666)
";

#[test]
fn nvidia_smi_l_lines_are_parsed_and_mig_lines_skipped() {
    assert_eq!(
        parse_nvidia_smi_l(SMI_L),
        [
            Gpu {
                index: 0,
                name: "NVIDIA A100-SXM4-40GB".into()
            },
            Gpu {
                index: 1,
                name: "Tesla T4".into()
            }
        ]
    );
    assert!(parse_nvidia_smi_l("No devices were found\n").is_empty());
}

#[test]
fn detect_prefers_the_info_file_then_proc() {
    let tmp = tempfile::tempdir().unwrap();
    let info = tmp.path().join("smi.txt");
    std::fs::write(&info, SMI_L).unwrap();
    let proc_dir = tmp.path().join("gpus");
    for (bus, minor, model) in [
        ("0000:3b:00.0", 1, "Tesla V100"),
        ("0000:18:00.0", 0, "Tesla P4"),
    ] {
        let d = proc_dir.join(bus);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("information"),
            format!("Model: \t\t {model}\nIRQ:   \t\t 31\nDevice Minor: \t {minor}\n"),
        )
        .unwrap();
    }
    let from_file = detect_gpus_from(Some(&info), &proc_dir);
    assert_eq!(from_file.len(), 2);
    assert_eq!(from_file[1].name, "Tesla T4");
    let from_proc = detect_gpus_from(None, &proc_dir);
    assert_eq!(
        from_proc,
        [
            Gpu {
                index: 0,
                name: "Tesla P4".into()
            },
            Gpu {
                index: 1,
                name: "Tesla V100".into()
            }
        ]
    );
}

#[test]
fn select_gpus_picks_the_first_n_or_fails_naming_both_numbers() {
    let gpus = parse_nvidia_smi_l(SMI_L);
    assert_eq!(select_gpus(2, &gpus).unwrap(), "0,1");
    assert_eq!(select_gpus(1, &gpus).unwrap(), "0");
    let err = select_gpus(3, &gpus).unwrap_err().to_string();
    assert_eq!(err, "3 GPUs requested but 2 detected");
    let err = select_gpus(1, &[]).unwrap_err().to_string();
    assert_eq!(err, "1 GPU requested but 0 detected");
}

/// [`check_capacity`] of a memory and a cpus limit.
fn capacity(memory_bytes: Option<u64>, cpus: Option<f64>) -> Result<(), LimitError> {
    check_capacity(&Limits {
        memory_bytes,
        cpus,
        ..Limits::default()
    })
}

#[test]
fn capacity_checks_against_this_machine() {
    capacity(Some(1 << 20), Some(0.5)).unwrap();
    let err = capacity(Some(u64::MAX), None).unwrap_err();
    assert!(matches!(err, LimitError::MemoryAboveTotal { .. }), "{err}");
    let err = capacity(None, Some(100_000.0)).unwrap_err();
    assert!(
        matches!(err, LimitError::CpusAboveCores { cores, .. } if cores >= 1),
        "{err}"
    );
}

/// A cgroup takes a pids limit up to the kernel's most processes, 2^22, and refuses
/// one above (EINVAL, or ERANGE past 2^63): refused before anything runs instead.
#[test]
fn pids_up_to_what_a_kernel_can_have() {
    let pids = |n| {
        check_capacity(&Limits {
            pids: Some(n),
            ..Limits::default()
        })
    };
    pids(PIDS_MOST).unwrap();
    for n in [PIDS_MOST + 1, u64::MAX] {
        let err = pids(n).unwrap_err();
        assert!(
            matches!(err, LimitError::PidsAboveMost { requested } if requested == n),
            "{err}"
        );
    }
}

/// A memory limit is held in whole pages: one page is the least, and what is not a
/// whole number of them is rounded down, as the kernel does.
#[test]
fn memory_is_held_in_whole_pages() {
    let page = page_size();
    assert!(page >= 4096 && page.is_power_of_two(), "{page}");
    assert_eq!(whole_pages(page), page);
    assert_eq!(whole_pages(3 * page - 1), 2 * page);
    assert_eq!(whole_pages(100_000_000), 100_000_000 - 100_000_000 % page);
    capacity(Some(page), None).unwrap();
    let err = capacity(Some(page - 1), None).unwrap_err();
    assert!(
        matches!(err, LimitError::MemoryBelowPage { page: p, .. } if p == page),
        "{err}"
    );
}

/// The edges are exactly the machine's: all of `MemTotal` and every online core fit,
/// one byte or half a core more does not.
#[test]
fn capacity_edges_are_memtotal_and_online_cores() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let total = kib * 1024;
    capacity(Some(total), None).unwrap();
    let err = capacity(Some(total + 1), None).unwrap_err();
    assert!(
        matches!(err, LimitError::MemoryAboveTotal { total: t, .. } if t == total),
        "{err}"
    );
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let cores: usize = online
        .trim()
        .split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum();
    capacity(None, Some(cores as f64)).unwrap();
    let err = capacity(None, Some(cores as f64 + 0.5)).unwrap_err();
    assert!(
        matches!(err, LimitError::CpusAboveCores { cores: c, .. } if c == cores),
        "{err}"
    );
}
