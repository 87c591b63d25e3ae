//! `runner cache list` and `runner cache prune`: the prepare cache (and, with
//! `--older-than`, the remembered manifest checks).

use steprunner::cli::CacheCmd;
use steprunner::home::Home;
use steprunner::units::Bytes;
use steprunner::{cache, stamps};

use super::{CliError, Exit};

fn age(t: Option<std::time::SystemTime>) -> String {
    let Some(t) = t else { return "-".into() };
    let secs = t.elapsed().unwrap_or_default().as_secs();
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

pub fn run(cmd: CacheCmd) -> Result<Exit, CliError> {
    let home = Home::from_env();
    let dir = home.cache();
    match cmd {
        CacheCmd::List { json } => {
            let entries = cache::list(&dir);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&entries).expect("entries serialize")
                );
                return Ok(Exit::Success);
            }
            println!(
                "{:<16} {:<14} {:>10} {:>10}  STATE",
                "KEY", "FLAVOR", "SIZE", "LAST USED"
            );
            for e in &entries {
                let state = match (e.in_use, e.complete) {
                    (true, _) => "in use",
                    (false, true) => "ready",
                    (false, false) => "unfinished",
                };
                println!(
                    "{:<16} {:<14} {:>10} {:>10}  {state}",
                    e.key,
                    e.flavor,
                    Bytes(e.size_bytes).to_string(),
                    age(e.last_used)
                );
            }
            let total: u64 = entries.iter().map(|e| e.size_bytes).sum();
            eprintln!(
                "{} entr{} · {} in `{}`",
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" },
                Bytes(total),
                dir.display()
            );
            Ok(Exit::Success)
        }
        CacheCmd::Prune {
            older_than,
            max_size,
            dry_run,
            json,
        } => {
            let removed = cache::prune(&dir, older_than, max_size, dry_run);
            let verb = if dry_run { "would remove" } else { "removed" };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&removed).expect("entries serialize")
                );
            } else {
                for e in &removed {
                    println!(
                        "{verb} {} ({}, {})",
                        e.name,
                        Bytes(e.size_bytes),
                        age(e.last_used)
                    );
                }
            }
            let freed: u64 = removed.iter().map(|e| e.size_bytes).sum();
            eprintln!(
                "{verb} {} entr{}, {}",
                removed.len(),
                if removed.len() == 1 { "y" } else { "ies" },
                Bytes(freed)
            );
            if let Some(older) = older_than {
                let n = stamps::prune(&home, older, dry_run);
                eprintln!(
                    "{verb} {n} remembered manifest check{} (`{}`)",
                    super::plural(n),
                    home.validated().display()
                );
            }
            Ok(Exit::Success)
        }
    }
}
