//! `colony logs`: every instance's log lines, merged in time order, filtered.
//!
//! Owns: reading `.colony/logs/*.log` (one file per instance, kept after the instance
//! exits or crashes), parsing the JSON lines that instances write (see
//! `colony::telemetry`), the filters (`--service`, `--trace`, `--request`, `--level`,
//! `--since`) and the output (text, or one JSON object per line). Promises: files are read
//! as streams and merged by time, so memory stays bounded by the number of files, not by
//! their size (a line longer than [`MAX_LINE`] is cut); lines that are not JSON (what an
//! app prints, a panic message) keep their place after the line before them and are shown
//! unless a filter asks for something only JSON lines carry. Must not touch: the
//! orchestrator (logs are read from disk, so they can be read with no cluster running).

use std::collections::{BTreeMap, BinaryHeap};
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::Value;

/// The longest line kept; the rest of a longer one is dropped.
pub(crate) const MAX_LINE: usize = 1024 * 1024;

/// What `colony logs` was asked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    /// Only lines of this service (a full name, or `module::*`), or of a process running it.
    pub(crate) service: Option<String>,
    /// Only lines of this trace (its id, or the start of it).
    pub(crate) trace: Option<String>,
    /// Only lines of this request id.
    pub(crate) request: Option<String>,
    /// Only lines at this level or more severe.
    pub(crate) level: Option<Level>,
    /// Only lines from this long ago or later.
    pub(crate) since: Option<Duration>,
    /// Keep reading as instances write.
    pub(crate) follow: bool,
    /// Print JSON objects instead of text.
    pub(crate) json: bool,
}

/// A log level, most severe last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Level::Trace,
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warn" | "warning" => Level::Warn,
            "error" => Level::Error,
            _ => return None,
        })
    }
}

/// Parse `--level`.
pub(crate) fn parse_level(s: &str) -> Result<Level, String> {
    Level::parse(s)
        .ok_or_else(|| format!("`{s}` is not a log level; use error, warn, info, debug or trace"))
}

/// Parse `--since`: `30s`, `5m`, `2h`, `1d`, `250ms` (Colony's one duration grammar).
pub(crate) fn parse_since(s: &str) -> Result<Duration, String> {
    colony::control::config::duration(s)
}

/// One log line, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Microseconds since the Unix epoch: the line's own, or the previous line's.
    pub(crate) time: i64,
    /// The instance (the file's name) that wrote it.
    pub(crate) instance: String,
    /// The line as written, without its newline.
    pub(crate) raw: String,
    /// The parsed object, for a JSON line.
    pub(crate) json: Option<Value>,
}

impl Entry {
    fn field(&self, name: &str) -> Option<&str> {
        self.json.as_ref()?.get(name)?.as_str()
    }

    fn level(&self) -> Option<Level> {
        self.field("level").and_then(Level::parse)
    }
}

/// Whether `service` matches `pattern`: the same name, a `module::*` prefix, or `*`;
/// `service` may be a comma-separated list (a process hosting several).
fn service_matches(pattern: &str, service: &str) -> bool {
    service.split(',').map(str::trim).any(|s| {
        pattern == "*"
            || pattern == s
            || pattern
                .strip_suffix("::*")
                .is_some_and(|p| s.strip_prefix(p).is_some_and(|r| r.starts_with("::")))
    })
}

impl Options {
    /// Whether `entry` passes the filters; `file_service` is what the instance that wrote
    /// it runs, from the orchestrator's state.
    fn admits(&self, entry: &Entry, file_service: Option<&str>, since_us: Option<i64>) -> bool {
        if since_us.is_some_and(|s| entry.time < s) {
            return false;
        }
        if let Some(pattern) = &self.service {
            let service = entry.field("service").or(file_service);
            if !service.is_some_and(|s| service_matches(pattern, s)) {
                return false;
            }
        }
        if let Some(trace) = &self.trace
            && !entry
                .field("trace_id")
                .is_some_and(|t| t.starts_with(trace.as_str()))
        {
            return false;
        }
        if let Some(request) = &self.request
            && entry.field("request_id") != Some(request.as_str())
        {
            return false;
        }
        if let Some(level) = self.level
            && entry.level().is_none_or(|l| l < level)
        {
            return false;
        }
        true
    }
}

/// Microseconds since the Unix epoch of an RFC 3339 time in UTC (`...Z`) or with an
/// offset (`...+02:00`).
pub(crate) fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let kept = &frac[..digits.min(6)];
        micros = kept.parse::<i64>().ok()? * 10i64.pow(6 - kept.len() as u32);
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // The month's first day from the calendar, then the day within it (a 31st of a shorter
    // month runs on into the next, as it always has here).
    let month = time::Month::try_from(u8::try_from(mo).ok()?).ok()?;
    let first = time::Date::from_calendar_date(i32::try_from(y).ok()?, month, 1).ok()?;
    let days = first.midnight().assume_utc().unix_timestamp() / 86_400 + d - 1;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset) * 1_000_000 + micros)
}

/// RFC 3339 in UTC with microseconds, from microseconds since the epoch (beyond the
/// calendar's years ±9999, the number itself).
fn format_time(us: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        ),
        Err(_) => us.to_string(),
    }
}

/// One instance's log file, read as a stream.
struct Source {
    path: PathBuf,
    instance: String,
    /// What the instance runs, from the orchestrator's state (for lines that do not say).
    service: Option<String>,
    reader: BufReader<File>,
    /// The time of the last line read, for lines without one.
    last_time: i64,
    /// A line still being written (no newline yet), in follow mode.
    partial: Vec<u8>,
}

impl Source {
    fn open(path: &Path, service: Option<String>) -> std::io::Result<Source> {
        let file = File::open(path)?;
        // A file's first lines may be plain text: give them the file's creation time.
        let created = file
            .metadata()
            .and_then(|m| m.created().or_else(|_| m.modified()))
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_micros() as i64);
        Ok(Source {
            instance: path
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
            path: path.to_owned(),
            service,
            reader: BufReader::new(file),
            last_time: created,
            partial: Vec::new(),
        })
    }

    /// The next complete line; at the end of the file, `None` (a last line without a
    /// newline is returned unless `wait_for_newline`, which keeps it for later).
    fn next(&mut self, wait_for_newline: bool) -> std::io::Result<Option<Entry>> {
        loop {
            let complete = read_line_limited(&mut self.reader, &mut self.partial)?;
            if !complete && (wait_for_newline || self.partial.is_empty()) {
                return Ok(None);
            }
            let bytes = std::mem::take(&mut self.partial);
            let raw = String::from_utf8_lossy(&bytes)
                .trim_end_matches(['\n', '\r'])
                .to_owned();
            if raw.trim().is_empty() {
                if complete {
                    continue;
                }
                return Ok(None);
            }
            let json: Option<Value> = raw
                .starts_with('{')
                .then(|| serde_json::from_str::<Value>(&raw).ok())
                .flatten()
                .filter(Value::is_object);
            let time = json
                .as_ref()
                .and_then(|j| j.get("time")?.as_str().and_then(parse_time))
                .unwrap_or(self.last_time);
            self.last_time = self.last_time.max(time);
            return Ok(Some(Entry {
                time,
                instance: self.instance.clone(),
                raw,
                json,
            }));
        }
    }
}

/// Append to `line` up to the next newline (included); bytes past [`MAX_LINE`] are read
/// and dropped. True when a newline ended it.
fn read_line_limited(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<bool> {
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(false);
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len();
        reader.consume(used);
        if done {
            return Ok(true);
        }
    }
}

/// The log files under `dir` (`.colony/logs/*.log`), by name.
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Instance id → the service it runs, from the orchestrator's `state.json`.
fn services_by_instance(state_dir: &Path) -> BTreeMap<String, String> {
    let state: Value = std::fs::read(state_dir.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    state["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            Some((
                i["id"].as_str()?.to_owned(),
                i["service"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// How lines are printed.
struct Printer {
    json: bool,
    colour: bool,
}

impl Printer {
    fn print(&self, out: &mut impl Write, entry: &Entry) -> std::io::Result<()> {
        if self.json {
            return match &entry.json {
                Some(Value::Object(o)) if o.contains_key("instance") => {
                    writeln!(out, "{}", entry.raw)
                }
                Some(Value::Object(o)) => {
                    let mut o = o.clone();
                    o.insert("instance".to_owned(), entry.instance.clone().into());
                    writeln!(out, "{}", Value::Object(o))
                }
                _ => {
                    let line = serde_json::json!({
                        "time": format_time(entry.time),
                        "level": null,
                        "instance": entry.instance,
                        "message": entry.raw,
                    });
                    writeln!(out, "{line}")
                }
            };
        }
        let (dim, reset) = if self.colour {
            ("\x1b[2m", "\x1b[0m")
        } else {
            ("", "")
        };
        let Some(json) = &entry.json else {
            return writeln!(
                out,
                "{dim}{} {:<5} {}{reset} {}",
                format_time(entry.time),
                "",
                entry.instance,
                entry.raw
            );
        };
        let level = json["level"].as_str().unwrap_or("");
        let colour = match (self.colour, level) {
            (false, _) => "",
            (true, "ERROR") => "\x1b[31m",
            (true, "WARN") => "\x1b[33m",
            (true, "INFO") => "\x1b[32m",
            (true, "DEBUG") => "\x1b[34m",
            (true, _) => "\x1b[35m",
        };
        let mut line = format!(
            "{dim}{}{reset} {colour}{level:>5}{reset} {}",
            json["time"].as_str().unwrap_or(""),
            json["instance"].as_str().unwrap_or(&entry.instance),
        );
        if let Some(s) = json["service"].as_str() {
            line.push_str(&format!(" {dim}{s}{reset}"));
        }
        line.push_str(": ");
        line.push_str(json["message"].as_str().unwrap_or(""));
        if let Some(fields) = json["fields"].as_object() {
            for (k, v) in fields {
                match v {
                    Value::String(s) if !s.contains([' ', '"', '=']) && !s.is_empty() => {
                        line.push_str(&format!(" {k}={s}"));
                    }
                    other => line.push_str(&format!(" {k}={other}")),
                }
            }
        }
        if let Some(t) = json["trace_id"].as_str() {
            line.push_str(&format!(" {dim}trace_id={t}{reset}"));
        }
        if let Some(r) = json["request_id"].as_str() {
            line.push_str(&format!(" {dim}request_id={r}{reset}"));
        }
        writeln!(out, "{line}")
    }
}

/// A line waiting in the merge: ordered by time, then by file, then by position.
struct Pending {
    entry: Entry,
    source: usize,
    seq: u64,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Reversed: BinaryHeap is a max-heap, the merge wants the earliest first.
        other.key().cmp(&self.key())
    }
}
impl Pending {
    fn key(&self) -> (i64, usize, u64) {
        (self.entry.time, self.source, self.seq)
    }
}

/// `colony logs`: print the matching lines of every instance of the app at `path`.
pub(crate) fn run(path: &Path, options: &Options) -> anyhow::Result<()> {
    let state_dir = path.join(".colony");
    let dir = state_dir.join("logs");
    if !dir.is_dir() {
        bail!(
            "{} has no logs; `colony up` in {} writes each instance's log there",
            dir.display(),
            path.display()
        );
    }
    let since_us = options.since.map(|d| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as i64;
        now - d.as_micros() as i64
    });
    let services = services_by_instance(&state_dir);
    let mut sources = Vec::new();
    for file in log_files(&dir) {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let source = Source::open(&file, services.get(&stem).cloned())
            .with_context(|| format!("could not read {}", file.display()))?;
        sources.push(source);
    }
    let printer = Printer {
        json: options.json,
        colour: !options.json && std::io::IsTerminal::is_terminal(&std::io::stdout()),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // The lines written so far: a k-way merge, one pending line per file.
    let mut heap = BinaryHeap::new();
    let mut seq = 0u64;
    for (i, source) in sources.iter_mut().enumerate() {
        if let Some(entry) = source.next(options.follow)? {
            seq += 1;
            heap.push(Pending {
                entry,
                source: i,
                seq,
            });
        }
    }
    while let Some(Pending { entry, source, .. }) = heap.pop() {
        let file_service = sources[source].service.clone();
        if options.admits(&entry, file_service.as_deref(), since_us) {
            emit(&printer, &mut out, &entry)?;
        }
        if let Some(next) = sources[source].next(options.follow)? {
            seq += 1;
            heap.push(Pending {
                entry: next,
                source,
                seq,
            });
        }
    }
    out.flush()?;
    if !options.follow {
        return Ok(());
    }
    drop(out);
    follow(&dir, &state_dir, sources, options, &printer, since_us)
}

fn emit(printer: &Printer, out: &mut impl Write, entry: &Entry) -> anyhow::Result<()> {
    match printer.print(out, entry) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => Ok(other?),
    }
}

/// Keep printing new lines, from files known and new, each batch in time order, until
/// interrupted.
fn follow(
    dir: &Path,
    state_dir: &Path,
    mut sources: Vec<Source>,
    options: &Options,
    printer: &Printer,
    since_us: Option<i64>,
) -> anyhow::Result<()> {
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let known: Vec<PathBuf> = sources.iter().map(|s| s.path.clone()).collect();
        let new_files: Vec<PathBuf> = log_files(dir)
            .into_iter()
            .filter(|f| !known.contains(f))
            .collect();
        if !new_files.is_empty() {
            let services = services_by_instance(state_dir);
            for file in new_files {
                let stem = file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if let Ok(source) = Source::open(&file, services.get(&stem).cloned()) {
                    sources.push(source);
                }
            }
        }
        let mut batch = Vec::new();
        for source in &mut sources {
            // A file that was truncated or replaced starts over.
            if let (Ok(meta), Ok(pos)) = (
                std::fs::metadata(&source.path),
                source.reader.stream_position(),
            ) && meta.len() < pos
            {
                source.reader.seek(SeekFrom::Start(0))?;
                source.partial.clear();
            }
            while let Some(entry) = source.next(true)? {
                if options.admits(&entry, source.service.as_deref(), since_us) {
                    batch.push(entry);
                }
                if batch.len() >= 100_000 {
                    break;
                }
            }
        }
        batch.sort_by_key(|e| e.time);
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for entry in &batch {
            emit(printer, &mut out, entry)?;
        }
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_with_and_without_offsets() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1_000_000));
        assert_eq!(
            parse_time("2024-05-01T09:30:00.123456Z"),
            Some(1_714_555_800_123_456)
        );
        assert_eq!(
            parse_time("2024-05-01T11:30:00.123+02:00"),
            Some(1_714_555_800_123_000)
        );
        assert_eq!(
            parse_time("2000-02-29T00:00:00.000000789Z"),
            Some(951_782_400_000_000)
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(
            format_time(1_714_555_800_123_456),
            "2024-05-01T09:30:00.123456Z"
        );
        // Offsets west of UTC, a day past the month's end, and times before the epoch.
        assert_eq!(
            parse_time("2024-04-30T23:30:00.123456-10:00"),
            Some(1_714_555_800_123_456)
        );
        assert_eq!(
            parse_time("2023-02-31T00:00:00Z"),
            parse_time("2023-03-03T00:00:00Z")
        );
        assert_eq!(parse_time("2024-13-01T00:00:00Z"), None);
        assert_eq!(format_time(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn services_match_names_and_modules() {
        assert!(service_matches("shop::quote", "shop::quote"));
        assert!(service_matches("shop::*", "shop::quote"));
        assert!(service_matches("shop::*", "a::b,shop::x::y"));
        assert!(!service_matches("shop::*", "shopping::quote"));
        assert!(!service_matches("shop::quote", "shop::quotes"));
    }

    #[test]
    fn durations_and_levels_parse() {
        assert_eq!(parse_since("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_since("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_since("soon").is_err());
        assert_eq!(parse_level("WARN"), Ok(Level::Warn));
        assert!(parse_level("loud").is_err());
        assert!(Level::Error > Level::Warn && Level::Info > Level::Debug);
    }

    #[test]
    fn files_merge_in_time_order_and_filter() {
        let dir = std::env::temp_dir().join(format!("colony-logs-{}", std::process::id()));
        let logs = dir.join(".colony").join("logs");
        std::fs::create_dir_all(&logs).expect("dir");
        let line = |t: &str, level: &str, trace: &str, msg: &str| {
            format!(
                r#"{{"time":"{t}","level":"{level}","service":"a::b","instance":"x","trace_id":"{trace}","span_id":null,"request_id":null,"message":"{msg}","fields":{{}}}}"#
            )
        };
        std::fs::write(
            logs.join("a-1.log"),
            format!(
                "colony: listening on 127.0.0.1:1\n{}\n{}\n",
                line("2024-05-01T09:30:00.000001Z", "INFO", "t1", "first"),
                line("2024-05-01T09:30:00.000003Z", "WARN", "t1", "third"),
            ),
        )
        .expect("write");
        std::fs::write(
            logs.join("b-2.log"),
            format!(
                "{}\n{}",
                line("2024-05-01T09:30:00.000002Z", "INFO", "t1", "second"),
                line("2024-05-01T09:30:00.000004Z", "INFO", "t2", "other"),
            ),
        )
        .expect("write");
        let mut sources: Vec<Source> = log_files(&logs)
            .iter()
            .map(|f| Source::open(f, None).expect("opens"))
            .collect();
        let mut all = Vec::new();
        for s in &mut sources {
            while let Some(e) = s.next(false).expect("reads") {
                all.push(e);
            }
        }
        all.sort_by_key(|e| e.time);
        let options = Options {
            trace: Some("t1".into()),
            ..Options::default()
        };
        let picked: Vec<&str> = all
            .iter()
            .filter(|e| options.admits(e, None, None))
            .filter_map(|e| e.field("message"))
            .collect();
        assert_eq!(picked, ["first", "second", "third"]);
        let warn = Options {
            level: Some(Level::Warn),
            ..Options::default()
        };
        assert_eq!(all.iter().filter(|e| warn.admits(e, None, None)).count(), 1);
        // The plain line has no trace: it is shown only without such filters.
        assert!(
            all.iter()
                .any(|e| e.json.is_none() && Options::default().admits(e, None, None))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
