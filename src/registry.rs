//! The flavor registry: validated manifests stored under `$RUNNER_HOME/flavors`
//! by name, so `runner launch NAME` works like a registered step-operator flavor.

use std::path::{Path, PathBuf};

use crate::diag::Diagnostic;
use crate::home::Home;
use crate::validate;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("`{0}` is not a valid manifest")]
    Invalid(PathBuf, Vec<Diagnostic>),
    #[error("a flavor named `{name}` is already registered (`{path}`) with other contents")]
    Exists { name: String, path: PathBuf },
    #[error("cannot write `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no registered flavor named `{0}`")]
    NotFound(String),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Registered {
    New,
    Unchanged,
    Replaced,
}

/// A registered flavor's manifest path, by name.
pub fn find(home: &Home, name: &str) -> Option<PathBuf> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    let p = home.flavor(name);
    (valid && p.is_file()).then_some(p)
}

/// Validate `path` and store it under its flavor name.
pub fn register(
    home: &Home,
    path: &Path,
    force: bool,
) -> Result<(String, PathBuf, Registered), RegistryError> {
    let (src, flavor) =
        validate::check_file(path).map_err(|d| RegistryError::Invalid(path.to_path_buf(), d))?;
    let dest = home.flavor(&flavor.name);
    let how = match std::fs::read_to_string(&dest) {
        Ok(existing) if existing == src.text => {
            return Ok((flavor.name, dest, Registered::Unchanged));
        }
        Ok(_) if !force => {
            return Err(RegistryError::Exists {
                name: flavor.name,
                path: dest,
            });
        }
        Ok(_) => Registered::Replaced,
        Err(_) => Registered::New,
    };
    let write_err = |source| RegistryError::Write {
        path: dest.clone(),
        source,
    };
    std::fs::create_dir_all(home.flavors()).map_err(write_err)?;
    crate::util::write_file_atomic(&dest, src.text.as_bytes()).map_err(write_err)?;
    Ok((flavor.name, dest, how))
}

/// A registered flavor, for `runner flavor list`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Listed {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    /// Why it no longer validates (the schema or the runner changed since it was
    /// registered); `null` when it does.
    pub invalid: Option<String>,
}

/// Registered flavors, by name.
pub fn list(home: &Home) -> Vec<Listed> {
    let Ok(rd) = std::fs::read_dir(home.flavors()) else {
        return Vec::new();
    };
    let mut out: Vec<Listed> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|path| {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (description, invalid) = match validate::check_file(&path) {
                Ok((_, f)) => (f.description.unwrap_or_default(), None),
                Err(d) => (
                    String::new(),
                    Some(d.first().map(|d| d.message.clone()).unwrap_or_default()),
                ),
            };
            Listed {
                name,
                description,
                path,
                invalid,
            }
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_needs_force_to_replace_other_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::new(tmp.path());
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let venv = root.join("manifests/venv.yaml");
        let (name, path, how) = register(&home, &venv, false).unwrap();
        assert_eq!((name.as_str(), how), ("venv", Registered::New));
        assert_eq!(find(&home, "venv"), Some(path.clone()));
        assert_eq!(
            register(&home, &venv, false).unwrap().2,
            Registered::Unchanged
        );

        let other = tmp.path().join("other.yaml");
        let text = std::fs::read_to_string(&venv)
            .unwrap()
            .replace("description: Run", "description: Also run");
        std::fs::write(&other, text).unwrap();
        assert!(matches!(
            register(&home, &other, false),
            Err(RegistryError::Exists { .. })
        ));
        assert_eq!(
            register(&home, &other, true).unwrap().2,
            Registered::Replaced
        );
        assert!(list(&home)[0].description.starts_with("Also run"));
        assert_eq!(find(&home, "../etc/passwd"), None);
    }

    #[test]
    fn invalid_manifests_are_not_registered() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::new(tmp.path());
        let bad = tmp.path().join("bad.yaml");
        std::fs::write(
            &bad,
            "version: 1\nname: bad\nlaunch:\n  run: [\"{{ step.nmae }}\"]\n",
        )
        .unwrap();
        assert!(matches!(
            register(&home, &bad, false),
            Err(RegistryError::Invalid(..))
        ));
        assert!(list(&home).is_empty());
    }
}
