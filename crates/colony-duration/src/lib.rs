//! The one duration grammar of Colony.
//!
//! Every duration a person writes for Colony goes through [`parse`]: a service's
//! `#[microservice(timeout = "…")]` (at compile time), the command line (`--timeout`,
//! `--since`), `colony.toml` (`heartbeat`, `cooldown`, `ttl`, …), environment variables and
//! the gateway's `x-colony-timeout` header. So a value that works in one place works in all
//! of them, and fails in all of them with the same explanation.
//!
//! The grammar: one or more terms, each a decimal number and a unit, optionally separated
//! by spaces. Units are `ms`, `s`, `m`, `h` and `d`. A number without a unit is refused
//! rather than guessed (is `5` seconds or milliseconds?).
//!
//! ```
//! use std::time::Duration;
//! assert_eq!(colony_duration::parse("250ms"), Ok(Duration::from_millis(250)));
//! assert_eq!(colony_duration::parse("1.5s"), Ok(Duration::from_millis(1500)));
//! assert_eq!(colony_duration::parse("1h30m"), Ok(Duration::from_secs(5400)));
//! assert_eq!(colony_duration::parse("2 m 5 s"), Ok(Duration::from_secs(125)));
//! assert_eq!(colony_duration::parse("1d"), Ok(Duration::from_secs(86_400)));
//! assert!(colony_duration::parse("5").is_err_and(|e| e.to_string().contains("`5s`")));
//! assert_eq!(colony_duration::format(Duration::from_millis(90_500)), "1m30.5s");
//! ```
//!
//! This crate is the grammar only: it has no dependencies, so the procedural macros can
//! use it too. It must not know where a value came from; callers add that to the error.

use std::fmt;
use std::time::Duration;

/// The units, longest name first so that `ms` is not read as `m`.
const UNITS: [(&str, u128); 5] = [
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

/// How to write a duration, for error messages.
pub const USAGE: &str =
    "write a number and a unit (ms, s, m, h or d), like `250ms`, `5s`, `1.5m` or `1h30m`";

/// Why a text is not a duration. Its message quotes the text and says how to write one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    text: String,
    reason: String,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not a duration: {}", self.text, self.reason)
    }
}

impl std::error::Error for DurationError {}

/// Parse a duration such as `250ms`, `5s`, `1.5m`, `1h30m` or `1d`.
///
/// The value is exact (decimal arithmetic, no floating point) to the nanosecond; a value
/// finer than that, one too large for a [`Duration`], a missing or unknown unit, and an
/// empty text are errors that say what was wrong.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let fail = |reason: String| DurationError {
        text: text.to_owned(),
        reason,
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(fail(format!("it is empty; {USAGE}")));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if number.is_empty() {
            return Err(fail(format!("a number must come before `{unit}`; {USAGE}")));
        }
        let Some(&(_, unit_nanos)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(fail(if unit.is_empty() {
                let hint = if after.trim().is_empty() {
                    format!("write `{number}s` for seconds or `{number}ms` for milliseconds")
                } else {
                    USAGE.to_owned()
                };
                format!("`{number}` has no unit; {hint}")
            } else {
                format!("`{unit}` is not a unit; use ms, s, m, h or d")
            }));
        };
        total = total
            .checked_add(term_nanos(number, unit_nanos).map_err(fail)?)
            .ok_or_else(|| fail("it is too long".to_owned()))?;
        rest = after.trim_start();
    }
    let secs =
        u64::try_from(total / 1_000_000_000).map_err(|_| fail("it is too long".to_owned()))?;
    // The remainder of a division by 10^9 always fits.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// `number` (decimal digits with at most one point) times `unit_nanos`, exactly.
fn term_nanos(number: &str, unit_nanos: u128) -> Result<u128, String> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(format!("`{number}` is not a number; {USAGE}"));
    }
    let too_long = || "it is too long".to_owned();
    let digits: u128 = if whole.len() + fraction.len() > 30 {
        return Err(too_long());
    } else {
        format!("{whole}{fraction}")
            .parse()
            .map_err(|_| too_long())?
    };
    let scale = 10u128.pow(fraction.len() as u32);
    let scaled = digits.checked_mul(unit_nanos).ok_or_else(too_long)?;
    if scaled % scale != 0 {
        return Err("it is finer than a nanosecond".to_owned());
    }
    Ok(scaled / scale)
}

/// Write `duration` the way people read it and [`parse`] reads it back: `250ms`, `30s`,
/// `1m30.5s`, `2h`, `1d3h`. Below a millisecond it writes fractions of milliseconds.
pub fn format(duration: Duration) -> String {
    let mut nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (name, unit) in [
        ("d", 86_400_000_000_000u128),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
    ] {
        if nanos >= unit {
            out.push_str(&format!("{}{name}", nanos / unit));
            nanos %= unit;
        }
    }
    if nanos == 0 {
        return out;
    }
    let (whole_unit, name) = if out.is_empty() && nanos < 1_000_000_000 {
        (1_000_000u128, "ms")
    } else {
        (1_000_000_000u128, "s")
    };
    let whole = nanos / whole_unit;
    let fraction = nanos % whole_unit;
    out.push_str(&whole.to_string());
    if fraction != 0 {
        let width = whole_unit.ilog10() as usize;
        let digits = format!("{fraction:0width$}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push_str(name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Duration {
        parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn reads_every_unit_and_compound() {
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("5s"), Duration::from_secs(5));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.1s"), Duration::from_millis(1100));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1d"), Duration::from_secs(86_400));
        assert_eq!(ok(" 1h 30m "), Duration::from_secs(5400));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("2 s"), Duration::from_secs(2));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("0.000001ms"), Duration::from_nanos(1));
    }

    #[test]
    fn refuses_with_a_reason() {
        let reason = |text: &str| parse(text).expect_err(text).to_string();
        assert!(
            reason("5").contains("has no unit; write `5s`"),
            "{}",
            reason("5")
        );
        assert!(reason("5x").contains("`x` is not a unit"));
        assert!(reason("").contains("empty"));
        assert!(reason("s").contains("a number must come before `s`"));
        assert!(reason("1.2.3s").contains("not a number"));
        assert!(reason("0.0000001ms").contains("finer than a nanosecond"));
        assert!(reason("99999999999999999999999999999999999999999m").contains("too long"));
        assert!(reason("999999999999999999999d").contains("too long"));
        assert!(reason("5s 3").contains("has no unit"));
        assert!(reason("-5s").contains("a number must come before"));
    }

    #[test]
    fn format_reads_back() {
        for text in [
            "250ms", "30s", "1m30.5s", "2h", "1d3h", "0.5ms", "1h0.001s", "0s",
        ] {
            let d = ok(text);
            assert_eq!(format(d), text, "{text}");
            assert_eq!(ok(&format(d)), d);
        }
        for nanos in [
            1u64,
            999,
            1_000_001,
            59_999_999_999,
            86_400_000_000_001,
            u64::MAX,
        ] {
            let d = Duration::from_nanos(nanos);
            assert_eq!(ok(&format(d)), d, "{nanos}");
        }
    }
}
