//! Parsing of the units people write in manifests and step info: byte sizes
//! (`512MiB`, `4GB`, `1.5GiB`, a plain byte count), durations (`90s`, `1h 30m`,
//! plain seconds) and CPU counts. Each is parsed once, into bytes, seconds or cores.

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnitError {
    #[error(
        "invalid size `{0}`: expected a byte count or a number with one of KB MB GB TB PB (decimal), KiB MiB GiB TiB PiB (binary), e.g. `512MiB`{suggestion}", suggestion = suggest_size(.0)
    )]
    Size(String),
    #[error("memory `{0}` is zero: give the step some, e.g. `512MiB`")]
    ZeroMemory(String),
    #[error(
        "invalid duration `{0}`: expected seconds or a duration such as `90s`, `10m`, `1h 30m`"
    )]
    Duration(String),
    #[error("age `{0}` has no unit: write `{0}s`, `{0}m`, `{0}h` or `{0}d` (e.g. `7d`, `12h`)")]
    AgeUnit(String),
    #[error("duration `{0}` is too long: at most 100 years")]
    TooLong(String),
    #[error("invalid cpu count `{0}`: expected a positive number of cores such as `2` or `0.5`")]
    Cpus(String),
    #[error("invalid count `{0}`: expected a whole non-negative number")]
    Count(String),
}

/// For a size written the way other tools write it (`2G`, `2gb`, `512m`): the two
/// spellings it could mean here.
fn suggest_size(text: &str) -> String {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let letter = match unit.trim().to_ascii_lowercase().as_str() {
        "k" | "kb" | "kib" => "K",
        "m" | "mb" | "mib" => "M",
        "g" | "gb" | "gib" => "G",
        "t" | "tb" | "tib" => "T",
        "p" | "pb" | "pib" => "P",
        _ => return String::new(),
    };
    if num.is_empty() {
        return String::new();
    }
    format!(" (did you mean `{num}{letter}B` or `{num}{letter}iB`?)")
}

/// Memory for a step: a size (see [`parse_bytes`]) that is more than zero.
pub fn parse_memory(text: &str) -> Result<u64, UnitError> {
    match parse_bytes(text)? {
        0 => Err(UnitError::ZeroMemory(text.to_string())),
        n => Ok(n),
    }
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

/// Longest duration accepted anywhere (timeouts, grace periods, ages): about 100 years.
/// Anything longer is a mistake, and would overflow the clock arithmetic it feeds.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// A duration from `90`, `1.5`, `90s`, `10m`, `1h 30m`, `2days`; at most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let err = || UnitError::Duration(text.to_string());
    let s = text.trim();
    let d = match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => {
            if secs > MAX_DURATION.as_secs_f64() {
                return Err(UnitError::TooLong(text.to_string()));
            }
            Duration::from_secs_f64(secs)
        }
        Ok(_) => return Err(err()),
        Err(_) => humantime::parse_duration(s).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => UnitError::TooLong(text.to_string()),
            _ => err(),
        })?,
    };
    if d > MAX_DURATION {
        return Err(UnitError::TooLong(text.to_string()));
    }
    Ok(d)
}

/// An age on the command line (`--older-than 7d`): a duration with its unit. A bare
/// number is refused: `--older-than 1` meant a day as often as a second.
pub fn parse_age(text: &str) -> Result<Duration, UnitError> {
    if text.trim().parse::<f64>().is_ok() {
        return Err(UnitError::AgeUnit(text.trim().to_string()));
    }
    parse_duration(text)
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

/// A duration for people, at most 7 characters: `4.02s`, `12m 05s`, `3h 04m`, `2d 03h`.
pub struct Elapsed(pub f64);

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.max(0.0);
        if secs < 60.0 {
            return write!(f, "{secs:.2}s");
        }
        let s = secs as u64;
        let text = match s {
            ..3_600 => format!("{}m {:02}s", s / 60, s % 60),
            3_600..86_400 => format!("{}h {:02}m", s / 3_600, s % 3_600 / 60),
            _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3_600),
        };
        f.pad(&text)
    }
}

/// A number of cores as given (`0.5`, `2`), in scientific notation where it has more
/// digits than a line holds (`1e308`: `--cpus` takes any finite number).
pub struct Cores(pub f64);

impl fmt::Display for Cores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = self.0.to_string();
        if plain.len() <= 16 {
            f.write_str(&plain)
        } else {
            write!(f, "{:e}", self.0)
        }
    }
}

/// A byte count for people: `1536` → `1.5 KiB`, `512` → `512 B`; binary units, one
/// decimal.
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        // Move up when rounding to one decimal would print 1024.0.
        while value >= 1023.95 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}

/// A size as a person wrote it: exact when it is a whole number of units (`64 MiB`,
/// `100 GiB`), else like [`Bytes`].
pub fn exact_bytes(n: u64) -> String {
    const UNITS: [(&str, u32); 5] = [
        ("PiB", 50),
        ("TiB", 40),
        ("GiB", 30),
        ("MiB", 20),
        ("KiB", 10),
    ];
    for (unit, shift) in UNITS {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{} {unit}", n >> shift);
        }
    }
    Bytes(n).to_string()
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
    fn other_tools_spellings_get_both_of_ours() {
        for (bad, want) in [
            ("2G", "`2GB` or `2GiB`"),
            ("2gb", "`2GB` or `2GiB`"),
            ("512m", "`512MB` or `512MiB`"),
        ] {
            let msg = parse_bytes(bad).unwrap_err().to_string();
            assert!(msg.contains(want), "{bad}: {msg}");
        }
        assert!(
            !parse_bytes("lots")
                .unwrap_err()
                .to_string()
                .contains("did you mean")
        );
        assert_eq!(parse_memory("0"), Err(UnitError::ZeroMemory("0".into())));
        assert!(parse_memory("0MiB").is_err());
        assert_eq!(parse_memory("1"), Ok(1));
    }

    #[test]
    fn durations() {
        let secs = |t| parse_duration(t).map(|d| d.as_secs_f64());
        assert_eq!(secs("90"), Ok(90.0));
        assert_eq!(secs("1.5"), Ok(1.5));
        assert_eq!(secs("10s"), Ok(10.0));
        assert_eq!(secs("1h 30m"), Ok(5400.0));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-3").is_err());
        assert!(parse_duration("NaN").is_err());
    }

    #[test]
    fn elapsed_times_read_at_a_glance() {
        let e = |s| Elapsed(s).to_string();
        assert_eq!(e(4.021), "4.02s");
        assert_eq!(e(59.994), "59.99s");
        assert_eq!(e(725.0), "12m 05s");
        assert_eq!(e(11_040.0), "3h 04m");
        assert_eq!(e(183_600.0), "2d 03h");
    }

    #[test]
    fn ages_need_a_unit() {
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age(" 1 "), Err(UnitError::AgeUnit("1".into())));
        assert_eq!(
            parse_age("1.5").unwrap_err().to_string(),
            "age `1.5` has no unit: write `1.5s`, `1.5m`, `1.5h` or `1.5d` (e.g. `7d`, `12h`)"
        );
        assert!(parse_age("soon").is_err());
    }

    /// Huge values are refused, never a panic in the clock arithmetic they feed.
    #[test]
    fn durations_are_bounded() {
        for huge in [
            "1e300",
            "1e30",
            "1e19",
            "3155760001",
            "999999999999999999999s",
            "200years",
        ] {
            assert!(
                matches!(
                    parse_duration(huge),
                    Err(UnitError::TooLong(_)) | Err(UnitError::Duration(_))
                ),
                "{huge}: {:?}",
                parse_duration(huge)
            );
        }
        assert_eq!(
            parse_duration("100years").map(|d| d <= MAX_DURATION),
            Ok(true)
        );
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
