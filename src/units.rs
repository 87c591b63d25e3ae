//! Parsing of the units people write in manifests and step info: byte sizes
//! (`512MiB`, `4GB`, `1.5GiB`, a plain byte count), durations (`90s`, `1h 30m`,
//! plain seconds) and CPU counts. Each is parsed once, into bytes, seconds or cores.

use std::fmt;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnitError {
    #[error(
        "invalid size `{0}`: expected a byte count or a number with one of KB MB GB TB PB (decimal), KiB MiB GiB TiB PiB (binary), e.g. `512MiB`"
    )]
    Size(String),
    #[error(
        "invalid duration `{0}`: expected seconds or a duration such as `90s`, `10m`, `1h 30m`"
    )]
    Duration(String),
    #[error("invalid cpu count `{0}`: expected a positive number of cores such as `2` or `0.5`")]
    Cpus(String),
    #[error("invalid count `{0}`: expected a whole non-negative number")]
    Count(String),
}

/// Bytes from a size as ZenML's `ResourceSettings.memory` accepts it, plus `B` and plain counts.
pub fn parse_bytes(text: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Size(text.to_string());
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let unit = unit.trim();
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1000u64.pow(2),
        "GB" => 1000u64.pow(3),
        "TB" => 1000u64.pow(4),
        "PB" => 1000u64.pow(5),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "PiB" => 1 << 50,
        _ => return Err(err()),
    };
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(err());
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(err);
    }
    let f: f64 = num.parse().map_err(|_| err())?;
    let bytes = (f * mult as f64).round();
    if unit.is_empty() || !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

/// Seconds from `90`, `1.5`, `90s`, `10m`, `1h 30m`, `2days`.
pub fn parse_duration(text: &str) -> Result<f64, UnitError> {
    let s = text.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(secs);
        }
        return Err(UnitError::Duration(text.to_string()));
    }
    humantime::parse_duration(s)
        .map(|d| d.as_secs_f64())
        .map_err(|_| UnitError::Duration(text.to_string()))
}

pub fn parse_cpus(text: &str) -> Result<f64, UnitError> {
    match text.trim().parse::<f64>() {
        Ok(c) if c.is_finite() && c > 0.0 => Ok(c),
        _ => Err(UnitError::Cpus(text.to_string())),
    }
}

pub fn parse_count(text: &str) -> Result<u64, UnitError> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| UnitError::Count(text.to_string()))
}

/// `1536` → `1.5 KiB`: binary units, one decimal.
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut v = self.0 as f64 / 1024.0;
        let mut i = 0;
        while v >= 1024.0 && i + 1 < UNITS.len() {
            v /= 1024.0;
            i += 1;
        }
        write!(f, "{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_zenml_writes_them() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("4GB"), Ok(4_000_000_000));
        assert_eq!(parse_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_bytes("256MB"), Ok(256_000_000));
        assert_eq!(parse_bytes("100KB"), Ok(100_000));
        assert_eq!(parse_bytes("2TiB"), Ok(2 << 40));
        assert_eq!(parse_bytes("1PiB"), Ok(1 << 50));
        assert_eq!(parse_bytes("1.5PB"), Ok(1_500_000_000_000_000));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes(" 64 MiB "), Ok(64 << 20));
    }

    #[test]
    fn bad_sizes_name_the_value() {
        for bad in [
            "",
            "MiB",
            "12 mb",
            "1.5",
            "-1MiB",
            "1..5GB",
            "1e3MB",
            "5 parsecs",
            "99999999999TiB",
        ] {
            let err = parse_bytes(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
            assert!(err.to_string().contains("KiB MiB GiB TiB PiB"), "{err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90.0));
        assert_eq!(parse_duration("1.5"), Ok(1.5));
        assert_eq!(parse_duration("10s"), Ok(10.0));
        assert_eq!(parse_duration("1h 30m"), Ok(5400.0));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-3").is_err());
    }

    #[test]
    fn cpus_and_counts() {
        assert_eq!(parse_cpus("0.5"), Ok(0.5));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("many").is_err());
        assert_eq!(parse_count("4096"), Ok(4096));
        assert!(parse_count("-1").is_err());
    }

    #[test]
    fn human_bytes() {
        assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
        assert_eq!(Bytes(64 << 20).to_string(), "64.0 MiB");
        assert_eq!(Bytes(12).to_string(), "12 B");
    }
}
