//! What the local runner's compressed flush schedule (`s3-export local
//! --interval`) observes: each scheduled flush run ("tick") and the files it
//! left in the destination, when each event was first seen there, and the
//! freshness that follows (from the producer's send to the first file
//! holding the event), measured and as estimated for the real schedule.
//! docs/freshness.md explains the figures.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Result;
use shared::interval::Interval;
use shared::key_layout::KeyLayout;
use shared::partition::Hour;

use crate::inspect::{list_keys, read_export_file};

/// The marker a destination with `successMarker` gets in an hour's folder.
const SUCCESS_MARKER: &str = "_SUCCESS";

/// One scheduled flush run of a local run and what it left in the
/// destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// From the first tick's slot (the schedule's start) to this run's start.
    pub started: Duration,
    /// How long the run took, its coordinator and workers (or its
    /// in-process run), until its files were published.
    pub took: Duration,
    /// Events the run archived and published.
    pub events: u64,
    /// Partitions that failed in the run (flushed again by the next).
    pub failed: usize,
    /// New export files of hours still open for this run (the grace not
    /// yet over): files that came before their hour closed.
    pub open_hour_files: usize,
    /// New export files of hours this run closed (late events, or an hour
    /// that ended during the local run).
    pub closed_hour_files: usize,
    /// Events seen in the destination for the first time after this run.
    pub new_events: usize,
    /// `_SUCCESS` markers new after this run in the folders of hours it
    /// closed.
    pub success_markers: usize,
    /// New `_SUCCESS` markers of hours still open for this run (or of a
    /// folder holding no file): each one is wrong.
    pub early_success_markers: Vec<String>,
}

/// p50, p95 and the largest of a set of durations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Freshness {
    /// How many events the figures are of.
    pub events: usize,
    pub p50: Duration,
    pub p95: Duration,
    pub max: Duration,
}

impl Freshness {
    /// The figures of `samples` (nearest rank); `None` when there are none.
    pub fn of(mut samples: Vec<Duration>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let rank = |percent: usize| samples[(samples.len() * percent).div_ceil(100).max(1) - 1];
        Some(Self {
            events: samples.len(),
            p50: rank(50),
            p95: rank(95),
            max: *samples.last().expect("not empty"),
        })
    }

    /// The expected freshness with the real schedule every
    /// `interval_minutes` instead of a tick every `tick`: an event waits
    /// for the next run a uniform time of up to the period, on average
    /// half of it, so the tick's wait is swapped for the schedule's:
    /// `p50 - tick/2 + interval/2`, and for the worst case
    /// `max - tick + interval`.
    pub fn estimate(&self, tick: Duration, interval_minutes: u32) -> (Duration, Duration) {
        let interval = Duration::from_secs(u64::from(interval_minutes) * 60);
        (
            self.p50.saturating_sub(tick / 2) + interval / 2,
            self.max.saturating_sub(tick) + interval,
        )
    }
}

/// What a local run's schedule did, and the freshness it measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleReport {
    /// The destination's interval, in minutes.
    pub interval_minutes: u32,
    /// The time between two ticks, standing in for the interval.
    pub tick_period: Duration,
    pub ticks: Vec<Tick>,
    /// From each event's send to the end of the first tick after which
    /// the destination held it; `None` when no tick delivered any.
    pub freshness: Option<Freshness>,
    /// Events first seen after the closing flush, not after a tick (the
    /// ticks did not deliver them before the schedule's timeout).
    pub seen_only_after_close: usize,
    /// Hour folders holding export files after the closing flush, and
    /// those of them with a `_SUCCESS` marker.
    pub folders: usize,
    pub folders_with_success: usize,
}

impl ScheduleReport {
    /// Ticks after which files of an hour still open had arrived.
    pub fn ticks_publishing_open_hours(&self) -> usize {
        self.ticks
            .iter()
            .filter(|tick| tick.open_hour_files > 0)
            .count()
    }

    /// `_SUCCESS` markers that appeared before their hour closed.
    pub fn early_success_markers(&self) -> Vec<&String> {
        self.ticks
            .iter()
            .flat_map(|tick| &tick.early_success_markers)
            .collect()
    }

    /// What the schedule got wrong, each said in a line: a marker before
    /// its hour closed, an hour folder without its marker after the close,
    /// events the ticks did not deliver.
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .early_success_markers()
            .into_iter()
            .map(|key| format!("{key} was written before its hour closed"))
            .collect();
        if self.folders_with_success < self.folders {
            problems.push(format!(
                "{} of {} hour folders in the destination have no _SUCCESS after the closing flush",
                self.folders - self.folders_with_success,
                self.folders
            ));
        }
        if self.seen_only_after_close > 0 {
            problems.push(format!(
                "{} events reached the destination only with the closing flush, not with a scheduled run",
                self.seen_only_after_close
            ));
        }
        problems
    }

    /// Prints the ticks and the freshness, measured and estimated, each
    /// labelled.
    pub fn print(&self) {
        let seconds = |d: Duration| d.as_secs_f64();
        let tick = seconds(self.tick_period);
        let minutes = self.interval_minutes;
        let interval = Interval::Minutes(minutes);
        let took: Vec<Duration> = self.ticks.iter().map(|t| t.took).collect();
        let longest = took.iter().max().copied().unwrap_or_default();
        let mean = took.iter().sum::<Duration>() / took.len().max(1) as u32;
        println!(
            "ticks         {} scheduled flush runs (EventBridge's payload, the grace applied) every {tick:.1} s, standing in for {interval}: {} of them published files before their hour closed ({} files), {} _SUCCESS markers of closed hours; each run {:.1} s on average, {:.1} s at most",
            self.ticks.len(),
            self.ticks_publishing_open_hours(),
            self.ticks.iter().map(|t| t.open_hour_files).sum::<usize>(),
            self.ticks.iter().map(|t| t.success_markers).sum::<usize>(),
            seconds(mean),
            seconds(longest),
        );
        println!(
            "              after the closing flush: {} of {} hour folders with files have their _SUCCESS",
            self.folders_with_success, self.folders
        );
        match &self.freshness {
            Some(measured) => {
                println!(
                    "freshness     measured: p50 {:.1} s, p95 {:.1} s, max {:.1} s over {} events, from SQS acknowledging the send to the end of the first tick whose files held the event, ticks every {tick:.1} s",
                    seconds(measured.p50),
                    seconds(measured.p95),
                    seconds(measured.max),
                    measured.events,
                );
                let (p50, max) = measured.estimate(self.tick_period, minutes);
                println!(
                    "              estimated for the real schedule {interval} (the tick's wait of up to {tick:.1} s replaced by one of up to {minutes} min, on average {:.1} min): p50 ≈ {:.1} - {:.1} + {} = {:.0} s ({:.1} min), max ≈ {:.1} - {tick:.1} + {} = {:.0} s ({:.1} min)",
                    f64::from(minutes) / 2.0,
                    seconds(measured.p50),
                    tick / 2.0,
                    minutes * 30,
                    seconds(p50),
                    seconds(p50) / 60.0,
                    seconds(measured.max),
                    minutes * 60,
                    seconds(max),
                    seconds(max) / 60.0,
                );
            }
            None => println!("freshness     not measured: no tick delivered an event"),
        }
        if self.seen_only_after_close > 0 {
            println!(
                "              {} events came only with the closing flush (not in the figures)",
                self.seen_only_after_close
            );
        }
    }
}

/// New objects in the destination since the last look.
#[derive(Debug, Default)]
pub struct NewObjects {
    /// Export files, each with its hour (`None`: a key the layout cannot
    /// have written).
    pub files: Vec<(String, Option<Hour>)>,
    /// `_SUCCESS` markers, each with the hour of its folder's files
    /// (`None`: a folder with no export file).
    pub success_markers: Vec<(String, Option<Hour>)>,
    /// Lines seen for the first time.
    pub new_lines: usize,
}

/// What the destination holds, looked at after each flush run: its
/// objects, the hour of each folder, and when each line was first seen.
#[derive(Debug)]
pub struct DestinationWatch {
    bucket: String,
    prefix: String,
    layout: KeyLayout,
    keys: HashSet<String>,
    /// The hour of the files in each folder (`…/hour=HH/`).
    folder_hours: HashMap<String, Hour>,
    /// When each line was first seen in a file of the destination.
    first_seen: HashMap<String, Instant>,
}

impl DestinationWatch {
    /// Watches `s3://bucket/prefix`, whose keys `layout` wrote.
    pub fn new(bucket: &str, prefix: &str, layout: KeyLayout) -> Self {
        Self {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            layout,
            keys: HashSet::new(),
            folder_hours: HashMap::new(),
            first_seen: HashMap::new(),
        }
    }

    /// Lists the destination and reads every export file not seen before;
    /// their lines not seen before are taken as first seen `at`.
    pub async fn look(&mut self, s3: &aws_sdk_s3::Client, at: Instant) -> Result<NewObjects> {
        let mut new = NewObjects::default();
        let mut markers = Vec::new();
        for key in list_keys(s3, &self.bucket, &self.prefix).await? {
            if !self.keys.insert(key.clone()) {
                continue;
            }
            if key.ends_with(SUCCESS_MARKER) {
                markers.push(key);
                continue;
            }
            let Some(file) = read_export_file(s3, &self.bucket, &key).await? else {
                continue;
            };
            for line in file.lines {
                if let std::collections::hash_map::Entry::Vacant(entry) =
                    self.first_seen.entry(line)
                {
                    entry.insert(at);
                    new.new_lines += 1;
                }
            }
            let hour = key
                .strip_prefix(&self.prefix)
                .and_then(|relative| self.layout.read_key(relative))
                .map(|fields| fields.hour);
            if let Some(hour) = hour {
                self.folder_hours.insert(folder(&key).to_owned(), hour);
            }
            new.files.push((key, hour));
        }
        new.success_markers = markers
            .into_iter()
            .map(|key| {
                let hour = self.folder_hours.get(folder(&key)).copied();
                (key, hour)
            })
            .collect();
        Ok(new)
    }

    /// When `line` was first seen in the destination.
    pub fn first_seen(&self, line: &str) -> Option<Instant> {
        self.first_seen.get(line).copied()
    }

    /// Whether every one of `lines` has been seen.
    pub fn holds_all<'a>(&self, mut lines: impl Iterator<Item = &'a str>) -> bool {
        lines.all(|line| self.first_seen.contains_key(line))
    }

    /// Folders holding export files, and those of them with a `_SUCCESS`.
    pub fn folders(&self) -> (usize, usize) {
        let with_success = self
            .folder_hours
            .keys()
            .filter(|folder| self.keys.contains(&format!("{folder}{SUCCESS_MARKER}")))
            .count();
        (self.folder_hours.len(), with_success)
    }
}

/// The key's folder, up to and with its last `/`.
fn folder(key: &str) -> &str {
    &key[..key.rfind('/').map_or(0, |slash| slash + 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(list: &[u64]) -> Vec<Duration> {
        list.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn freshness_is_the_nearest_rank_of_its_samples() {
        assert_eq!(Freshness::of(Vec::new()), None);
        let one = Freshness::of(seconds(&[7])).unwrap();
        assert_eq!(
            (one.p50, one.p95, one.max),
            (seconds(&[7])[0], seconds(&[7])[0], seconds(&[7])[0])
        );
        let hundred = Freshness::of(seconds(&(1..=100).rev().collect::<Vec<_>>())).unwrap();
        assert_eq!(hundred.events, 100);
        assert_eq!(hundred.p50, Duration::from_secs(50));
        assert_eq!(hundred.p95, Duration::from_secs(95));
        assert_eq!(hundred.max, Duration::from_secs(100));
    }

    #[test]
    fn the_estimate_swaps_the_ticks_wait_for_the_schedules() {
        let measured = Freshness {
            events: 10,
            p50: Duration::from_secs(4),
            p95: Duration::from_secs(6),
            max: Duration::from_secs(7),
        };
        // p50: 4 - 1 + 150; max: 7 - 2 + 300.
        assert_eq!(
            measured.estimate(Duration::from_secs(2), 5),
            (Duration::from_secs(153), Duration::from_secs(305))
        );
    }

    #[test]
    fn a_marker_early_or_missing_and_events_late_are_problems() {
        let tick = Tick {
            started: Duration::ZERO,
            took: Duration::from_secs(1),
            events: 3,
            failed: 0,
            open_hour_files: 1,
            closed_hour_files: 0,
            new_events: 3,
            success_markers: 0,
            early_success_markers: Vec::new(),
        };
        let mut report = ScheduleReport {
            interval_minutes: 5,
            tick_period: Duration::from_secs(2),
            ticks: vec![tick.clone(), tick.clone()],
            freshness: None,
            seen_only_after_close: 0,
            folders: 2,
            folders_with_success: 2,
        };
        assert!(report.problems().is_empty());
        assert_eq!(report.ticks_publishing_open_hours(), 2);
        report.ticks[1].early_success_markers = vec!["a/hour=10/_SUCCESS".to_owned()];
        report.folders_with_success = 1;
        report.seen_only_after_close = 4;
        let problems = report.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("a/hour=10/_SUCCESS"), "{problems:?}");
    }

    #[test]
    fn a_keys_folder_ends_with_its_slash() {
        assert_eq!(
            folder("s/tenant=t/dt=d/hour=10/_SUCCESS"),
            "s/tenant=t/dt=d/hour=10/"
        );
        assert_eq!(folder("_SUCCESS"), "");
    }
}
