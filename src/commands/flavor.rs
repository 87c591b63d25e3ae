//! `runner flavor register | list | show`: validated manifests stored by name.

use steprunner::cli::FlavorCmd;
use steprunner::home::Home;
use steprunner::registry;

use super::{CliError, Exit, chain};

pub fn run(cmd: FlavorCmd) -> Result<Exit, CliError> {
    let home = Home::from_env();
    match cmd {
        FlavorCmd::Register { path, force } => match registry::register(&home, &path, force) {
            Ok((name, dest, how)) => {
                let what = match how {
                    registry::Registered::New => "registered",
                    registry::Registered::Unchanged => "already registered, unchanged:",
                    registry::Registered::Replaced => "replaced",
                };
                eprintln!("{what} flavor `{name}` (`{}`)", dest.display());
                Ok(Exit::Success)
            }
            Err(registry::RegistryError::Invalid(_, diags)) => Err(CliError::Diagnostics(diags)),
            Err(e @ registry::RegistryError::Exists { .. }) => {
                Err(CliError::invalid(e.to_string()).hint("`--force` replaces it"))
            }
            Err(e) => Err(CliError::runner(chain(&e))),
        },
        FlavorCmd::List { json } => {
            let all = registry::list(&home);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&all).expect("flavors serialize")
                );
                return Ok(Exit::Success);
            }
            for f in &all {
                let about = match &f.invalid {
                    Some(why) => format!("(invalid: {why})"),
                    None => f.description.clone(),
                };
                println!("{:<16} {about}", f.name);
            }
            if all.is_empty() {
                eprintln!("no registered flavors; `runner flavor register PATH` adds one");
            }
            Ok(Exit::Success)
        }
        FlavorCmd::Show { name } => match registry::find(&home, &name).map(std::fs::read_to_string)
        {
            Some(Ok(text)) => {
                print!("{text}");
                Ok(Exit::Success)
            }
            _ => Err(CliError::invalid(
                registry::RegistryError::NotFound(name).to_string(),
            )),
        },
    }
}
