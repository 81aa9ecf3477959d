//! A Release's history drawn as an SVG timeline, for a server-rendered page: what was
//! deployed when, how long each deploy waited for its verdict, what was rolled back to
//! what, and what people did.
//!
//! [`timeline`] draws one lane per deployed SHA, in order of first deploy, over a UTC time
//! axis. Each deploy is a bar from its `Deployed` entry to its verdict, or to now while it
//! waits; a rollback is an arrow from the rolled-back SHA's lane to the lane of the SHA it
//! returned to; people's acts, suspicions and the health monitor's changes are small
//! marks. Every bar, mark and arrow carries a `<title>` saying what it is, so a pointer
//! (or a screen reader) gets the details. [`summary`] counts deploys and rollbacks and
//! gives the median time to a verdict; the chart prints it above the lanes.
//!
//! The markup suits a strict Content-Security-Policy (`style-src 'self'`, no script): no
//! `style` attribute, no script, and no `id` either, since several charts may share a
//! page. Colours are presentation attributes, which a stylesheet overrides through the
//! class names: the chart `release-timeline`; bars `validated`, `rolled-back`, `failed`,
//! `superseded`, `verifying` and `replaced` (a deploy followed by another with no verdict
//! recorded in between); marks `mark` with `approved`, `break-glass`,
//! `quarantine-cleared`, `suspect`, `health-down`, `health-recovered`, `ci-passed`, or a
//! bar's class for a verdict that ends no deploy in flight (a person's rollback of a
//! validated SHA, a verdict whose deploy is not in the history); arrows `rollback`; and
//! `summary`, `lane`, `lane-label`, `grid`, `tick`, `axis`, `now`. Every text is escaped.
//! The chart is as wide as its container (`width="100%"`, no fixed height), its text
//! readable on a phone; a stylesheet may cap it with `max-width`.
//!
//! Entries are read in time order whatever their order in the slice, and nothing in a
//! history, however odd, makes the drawing panic.

use std::collections::HashMap;
use std::fmt::{self, Write as _};

use jiff::{SignedDuration, Timestamp};

use crate::api::common::Sha;
use crate::api::release::{HistoryEntry, HistoryEvent};

/// At most this many SHAs get a lane: those first deployed most recently.
const MAX_LANES: usize = 20;
/// The drawing's width in `viewBox` units; it scales to the width of the page.
const WIDTH: f64 = 480.0;
/// Where the plot starts, right of the lane labels.
const LEFT: f64 = 64.0;
/// Where the plot ends.
const RIGHT: f64 = 468.0;
/// The height of a line of the summary, above the lanes.
const LINE: f64 = 16.0;
/// A lane's height.
const LANE: f64 = 22.0;
/// A bar's height.
const BAR: f64 = 12.0;
/// A bar is never narrower than this, so a verdict given at once still shows.
const MIN_BAR: f64 = 2.0;
/// Room below the lanes for the time axis and its labels.
const AXIS: f64 = 30.0;
/// The axis shows at least this span, so that a history of one instant still has one.
const MIN_SPAN: SignedDuration = SignedDuration::from_secs(60);
/// At most this many tick labels of times of day.
const MAX_TICKS: i64 = 6;
/// At most this many tick labels of dates, which are longer.
const MAX_DATE_TICKS: i64 = 4;
/// A person's text (name, reason) is cut at this many characters in a title.
const TEXT_MAX: usize = 300;

/// Deploys, rollbacks and time to verdict, over a whole history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// `Deployed` entries.
    pub deploys: usize,
    /// `RolledBack` entries.
    pub rollbacks: usize,
    /// Median time from a deploy to its verdict (validated, rolled back or failed); none
    /// before a first verdict. Superseded deploys had no verdict and do not count.
    pub median_to_verdict: Option<SignedDuration>,
    /// How long the latest deploy has waited for its verdict until now, when it still
    /// waits.
    pub verifying_for: Option<SignedDuration>,
}

impl Summary {
    /// `3 deploys, 1 rollback, median time to verdict 2 min 5 s`.
    fn counts(&self) -> String {
        format!(
            "{}, {}, {}",
            counted(self.deploys, "deploy"),
            counted(self.rollbacks, "rollback"),
            self.median_to_verdict.map_or_else(
                || "no verdict yet".to_owned(),
                |d| format!("median time to verdict {}", human(d))
            )
        )
    }

    /// `verifying for 40 s`, while the latest deploy waits.
    fn waiting(&self) -> Option<String> {
        self.verifying_for
            .map(|d| format!("verifying for {}", human(d)))
    }
}

impl fmt::Display for Summary {
    /// `3 deploys, 1 rollback, median time to verdict 2 min 5 s, verifying for 40 s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.counts())?;
        if let Some(waiting) = self.waiting() {
            write!(f, ", {waiting}")?;
        }
        Ok(())
    }
}

/// Counts deploys and rollbacks in `history` and measures the time deploys took to get
/// their verdict; `now` tells how long the latest deploy has waited, when it still waits.
#[must_use]
pub fn summary(history: &[HistoryEntry], now: Timestamp) -> Summary {
    summarise(history, &story(history, now), now)
}

/// The history as an inline `<svg>` element (see the module's description); a small one
/// saying "No deploys yet" when nothing was deployed.
#[must_use]
pub fn timeline(history: &[HistoryEntry], now: Timestamp) -> String {
    let story = story(history, now);
    let summary = summarise(history, &story, now);
    let lanes = Lanes::of(&story.deploys);
    if lanes.shas.is_empty() {
        return empty();
    }
    let bars: Vec<(usize, &Deploy)> = story
        .deploys
        .iter()
        .filter_map(|d| Some((lanes.lane(&d.deployed.sha)?, d)))
        .collect();
    let marks: Vec<(usize, &HistoryEntry, Mark)> = story
        .points
        .iter()
        .filter_map(|e| Some((lanes.lane(&e.sha)?, *e, Mark::of(e.event)?)))
        .collect();
    let arrows: Vec<(usize, usize, &HistoryEntry)> = story
        .rollbacks
        .iter()
        .filter_map(|e| {
            let from = lanes.lane(&e.sha)?;
            let to = lanes.lane(e.previous.as_ref()?)?;
            (from != to).then_some((from, to, *e))
        })
        .collect();
    let times = bars
        .iter()
        .flat_map(|(_, d)| [d.deployed.at, d.end])
        .chain(marks.iter().map(|(_, e, _)| e.at))
        .chain(arrows.iter().map(|(_, _, e)| e.at));
    // The counts on a first line; what is still waiting and what is left out on a second.
    let second: Vec<String> = summary
        .waiting()
        .into_iter()
        .chain((lanes.hidden > 0).then(|| {
            format!(
                "the last {} of {} commits shown",
                lanes.shas.len(),
                lanes.shas.len() + lanes.hidden
            )
        }))
        .collect();
    let header = [summary.counts(), second.join(", ")];
    let header = if second.is_empty() {
        &header[..1]
    } else {
        &header[..]
    };
    let frame = Frame::new(times, now, header.len());
    let bottom = frame.lane_top(lanes.shas.len());
    let height = bottom + AXIS;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="release-timeline" viewBox="0 0 {WIDTH} {height}" width="100%" preserveAspectRatio="xMinYMin meet" role="img" aria-label="{}" font-family="sans-serif" font-size="11">"#,
        esc(&format!(
            "Deploy timeline of {} from {} to {}: {}.",
            counted(lanes.shas.len(), "commit"),
            when(frame.first),
            when(frame.last),
            header.join(", ")
        )),
    );
    for (i, line) in header.iter().enumerate() {
        let _ = write!(
            svg,
            r##"<text class="summary" x="8" y="{}" font-size="12" fill="#222">{}</text>"##,
            LINE * (count(i) + 1.0),
            esc(line)
        );
    }
    draw_lanes(&mut svg, &frame, &lanes.shas);
    draw_axis(&mut svg, &frame, bottom);
    for (lane, deploy) in &bars {
        draw_bar(&mut svg, &frame, *lane, deploy);
    }
    for (from, to, entry) in &arrows {
        draw_arrow(&mut svg, &frame, *from, *to, entry);
    }
    for (lane, entry, mark) in &marks {
        draw_mark(&mut svg, &frame, *lane, entry, *mark);
    }
    draw_now(&mut svg, &frame, now, bottom);
    svg.push_str("</svg>");
    svg
}

/// The chart of a Release that never deployed anything.
fn empty() -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="release-timeline empty" viewBox="0 0 {WIDTH} 40" width="100%" preserveAspectRatio="xMinYMin meet" role="img" aria-label="Deploy timeline: no deploys yet." font-family="sans-serif" font-size="12"><text class="summary" x="{}" y="24" text-anchor="middle" fill="#555">No deploys yet</text></svg>"##,
        WIDTH / 2.0
    )
}

// ----- reading the history -----

/// How a deploy ended, or that it has not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Validated,
    RolledBack,
    Failed,
    Superseded,
    /// Another deploy started with no verdict recorded for this one.
    Replaced,
    /// Still waiting for its verdict.
    Verifying,
}

impl Outcome {
    /// The outcome a history event gives a deploy of the same SHA in flight.
    fn of(event: HistoryEvent) -> Option<Self> {
        match event {
            HistoryEvent::Validated => Some(Self::Validated),
            HistoryEvent::RolledBack => Some(Self::RolledBack),
            HistoryEvent::Failed => Some(Self::Failed),
            HistoryEvent::Superseded => Some(Self::Superseded),
            _ => None,
        }
    }

    /// Whether this is a verdict whose delay counts in the median.
    fn is_verdict(self) -> bool {
        matches!(self, Self::Validated | Self::RolledBack | Self::Failed)
    }

    fn class(self) -> &'static str {
        match self {
            Self::Validated => "validated",
            Self::RolledBack => "rolled-back",
            Self::Failed => "failed",
            Self::Superseded => "superseded",
            Self::Replaced => "replaced",
            Self::Verifying => "verifying",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Self::Validated => "validated",
            Self::RolledBack => "rolled back",
            Self::Failed => "failed",
            Self::Superseded => "superseded",
            Self::Replaced => "replaced by the next deploy",
            Self::Verifying => "verifying",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Self::Validated => "#2e7d32",
            Self::RolledBack => "#c62828",
            Self::Failed => "#8e24aa",
            Self::Superseded => "#9e9e9e",
            Self::Replaced => "#cfcfcf",
            Self::Verifying => "#1e88e5",
        }
    }
}

/// One deploy: its `Deployed` entry, and how and when it ended.
#[derive(Debug)]
struct Deploy<'a> {
    deployed: &'a HistoryEntry,
    /// The verdict's instant; now (or the deploy's instant, if now is earlier) while it waits.
    end: Timestamp,
    outcome: Outcome,
    /// The entry that ended it, when one did.
    verdict: Option<&'a HistoryEntry>,
}

impl Deploy<'_> {
    /// From the deploy to its verdict, or until now.
    fn waited(&self) -> SignedDuration {
        self.end
            .duration_since(self.deployed.at)
            .max(SignedDuration::ZERO)
    }
}

/// The history read in time order: deploys paired with their verdicts, and the rest.
#[derive(Debug)]
struct Story<'a> {
    /// In order of deploy.
    deploys: Vec<Deploy<'a>>,
    /// Entries drawn as marks: neither a deploy nor the verdict that ended one.
    points: Vec<&'a HistoryEntry>,
    /// Every `RolledBack` entry, in time order.
    rollbacks: Vec<&'a HistoryEntry>,
}

/// Pairs each deploy with the verdict that follows it. An environment deploys one SHA at
/// a time, so a deploy ends at the first verdict naming its SHA, or when the next deploy
/// starts (without a verdict), or not yet. Entries with the same instant keep their order.
fn story(history: &[HistoryEntry], now: Timestamp) -> Story<'_> {
    let mut entries: Vec<&HistoryEntry> = history.iter().collect();
    entries.sort_by_key(|e| e.at);
    let mut story = Story {
        deploys: Vec::new(),
        points: Vec::new(),
        rollbacks: Vec::new(),
    };
    for e in entries {
        if e.event == HistoryEvent::RolledBack {
            story.rollbacks.push(e);
        }
        let in_flight = story
            .deploys
            .last_mut()
            .filter(|d| d.outcome == Outcome::Verifying);
        if e.event == HistoryEvent::Deployed {
            if let Some(d) = in_flight {
                d.end = e.at;
                d.outcome = Outcome::Replaced;
            }
            story.deploys.push(Deploy {
                deployed: e,
                end: now.max(e.at),
                outcome: Outcome::Verifying,
                verdict: None,
            });
            continue;
        }
        match (Outcome::of(e.event), in_flight) {
            (Some(outcome), Some(d)) if d.deployed.sha == e.sha => {
                d.end = e.at;
                d.outcome = outcome;
                d.verdict = Some(e);
            }
            _ => story.points.push(e),
        }
    }
    story
}

fn summarise(history: &[HistoryEntry], story: &Story<'_>, now: Timestamp) -> Summary {
    let to_verdict = story
        .deploys
        .iter()
        .filter(|d| d.outcome.is_verdict())
        .map(Deploy::waited)
        .collect();
    Summary {
        deploys: story.deploys.len(),
        rollbacks: history
            .iter()
            .filter(|e| e.event == HistoryEvent::RolledBack)
            .count(),
        median_to_verdict: median(to_verdict),
        verifying_for: story
            .deploys
            .last()
            .filter(|d| d.outcome == Outcome::Verifying)
            .map(|d| now.duration_since(d.deployed.at).max(SignedDuration::ZERO)),
    }
}

/// The middle value, or the midpoint of the two middle values.
fn median(mut values: Vec<SignedDuration>) -> Option<SignedDuration> {
    values.sort_unstable();
    let n = values.len();
    let high = *values.get(n / 2)?;
    if n % 2 == 1 {
        return Some(high);
    }
    let low = *values.get(n / 2 - 1)?;
    Some(low + (high - low) / 2)
}

/// The SHAs given a lane, in order of first deploy.
struct Lanes<'a> {
    shas: Vec<&'a Sha>,
    index: HashMap<&'a str, usize>,
    /// Deployed SHAs left without a lane (the oldest).
    hidden: usize,
}

impl<'a> Lanes<'a> {
    fn of(deploys: &[Deploy<'a>]) -> Self {
        let mut shas: Vec<&Sha> = Vec::new();
        for d in deploys {
            if !shas.contains(&&d.deployed.sha) {
                shas.push(&d.deployed.sha);
            }
        }
        let hidden = shas.len().saturating_sub(MAX_LANES);
        let shas = shas.split_off(hidden);
        let index = shas
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        Self {
            shas,
            index,
            hidden,
        }
    }

    fn lane(&self, sha: &Sha) -> Option<usize> {
        self.index.get(sha.as_str()).copied()
    }
}

// ----- geometry -----

/// Maps instants to x coordinates and lanes to y coordinates.
struct Frame {
    /// The first lane's top, below the summary's lines.
    top: f64,
    /// The earliest instant drawn.
    first: Timestamp,
    /// The latest instant drawn.
    last: Timestamp,
    /// The axis' left end (a little before `first`).
    from: Timestamp,
    /// The axis' right end (a little after `last`).
    to: Timestamp,
    /// The axis' span, in seconds (positive).
    seconds: f64,
}

impl Frame {
    /// A frame for `lines` of summary above the lanes, and a time axis spanning `times`
    /// and `now`, at least [`MIN_SPAN`] wide, with a margin.
    fn new(times: impl Iterator<Item = Timestamp>, now: Timestamp, lines: usize) -> Self {
        let (first, last) = times.fold((now, now), |(lo, hi), t| (lo.min(t), hi.max(t)));
        let span = last.duration_since(first);
        let pad = if span < MIN_SPAN {
            (MIN_SPAN - span) / 2
        } else {
            SignedDuration::ZERO
        } + span / 32
            + SignedDuration::from_secs(1);
        let from = first.saturating_sub(pad).unwrap_or(first);
        let to = last.saturating_add(pad).unwrap_or(last);
        let seconds = to.duration_since(from).as_secs_f64().max(1.0);
        Self {
            top: 12.0 + LINE * count(lines),
            first,
            last,
            from,
            to,
            seconds,
        }
    }

    /// The top of lane `i` (or, for the number of lanes, the bottom of the last one).
    fn lane_top(&self, i: usize) -> f64 {
        self.top + count(i) * LANE
    }

    /// The middle of lane `i`.
    fn lane_middle(&self, i: usize) -> f64 {
        self.lane_top(i) + LANE / 2.0
    }

    fn x(&self, t: Timestamp) -> f64 {
        let share = t.duration_since(self.from).as_secs_f64() / self.seconds;
        LEFT + share.clamp(0.0, 1.0) * (RIGHT - LEFT)
    }

    /// A few round instants across the axis, with their labels: times of day (UTC) when
    /// the span is a day or less, dates (and times, when ticks are less than a day apart)
    /// when it is more.
    fn ticks(&self) -> Vec<(Timestamp, String)> {
        const MINUTE: i64 = 60;
        const HOUR: i64 = 60 * MINUTE;
        const DAY: i64 = 24 * HOUR;
        const STEPS: [i64; 24] = [
            1,
            2,
            5,
            10,
            15,
            30,
            MINUTE,
            2 * MINUTE,
            5 * MINUTE,
            10 * MINUTE,
            15 * MINUTE,
            30 * MINUTE,
            HOUR,
            2 * HOUR,
            3 * HOUR,
            6 * HOUR,
            12 * HOUR,
            DAY,
            2 * DAY,
            7 * DAY,
            14 * DAY,
            30 * DAY,
            91 * DAY,
            365 * DAY,
        ];
        let start = self.from.as_second();
        let end = self.to.as_second();
        let span = end.saturating_sub(start).max(1);
        let most = if span > DAY {
            MAX_DATE_TICKS
        } else {
            MAX_TICKS
        };
        let step = STEPS
            .into_iter()
            .find(|s| span / s < most)
            .unwrap_or_else(|| (span / most / (365 * DAY) + 1) * 365 * DAY);
        let format = match (span > DAY, step >= DAY, step >= MINUTE) {
            (true, true, _) => "%Y-%m-%d",
            (true, false, _) => "%m-%d %H:%M",
            (false, _, true) => "%H:%M",
            (false, _, false) => "%H:%M:%S",
        };
        let mut tick = start.div_euclid(step).saturating_mul(step);
        let mut ticks = Vec::new();
        while tick <= end && ticks.len() <= usize::try_from(most).unwrap_or(0) {
            if tick >= start
                && let Ok(t) = Timestamp::from_second(tick)
            {
                ticks.push((t, t.strftime(format).to_string()));
            }
            let Some(next) = tick.checked_add(step) else {
                break;
            };
            tick = next;
        }
        ticks
    }
}

/// `n` as a coordinate factor (it is never large: lanes and lines are bounded).
fn count(n: usize) -> f64 {
    f64::from(u32::try_from(n).unwrap_or(u32::MAX))
}

// ----- drawing -----

fn draw_lanes(svg: &mut String, frame: &Frame, shas: &[&Sha]) {
    for (i, sha) in shas.iter().enumerate() {
        if i % 2 == 1 {
            let _ = write!(
                svg,
                r##"<rect class="lane" x="0" y="{:.1}" width="{WIDTH}" height="{LANE}" fill="#f4f4f4"/>"##,
                frame.lane_top(i)
            );
        }
        let _ = write!(
            svg,
            r##"<text class="lane-label" x="8" y="{:.1}" font-family="monospace" fill="#222"><title>{}</title>{}</text>"##,
            frame.lane_middle(i) + 4.0,
            esc(sha.as_str()),
            esc(sha.short())
        );
    }
}

fn draw_axis(svg: &mut String, frame: &Frame, bottom: f64) {
    let _ = write!(
        svg,
        r##"<line class="axis" x1="{LEFT}" y1="{bottom:.1}" x2="{RIGHT}" y2="{bottom:.1}" stroke="#888"/><text class="tick" x="8" y="{:.1}" fill="#555">UTC</text>"##,
        bottom + 16.0
    );
    let top = frame.top;
    for (t, label) in frame.ticks() {
        let x = frame.x(t);
        let anchor = if x - LEFT < 30.0 {
            "start"
        } else if RIGHT - x < 30.0 {
            "end"
        } else {
            "middle"
        };
        let _ = write!(
            svg,
            r##"<line class="grid" x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text class="tick" x="{x:.1}" y="{:.1}" text-anchor="{anchor}" fill="#555">{}</text>"##,
            bottom + 4.0,
            bottom + 16.0,
            esc(&label)
        );
    }
}

fn draw_bar(svg: &mut String, frame: &Frame, lane: usize, deploy: &Deploy<'_>) {
    let outcome = deploy.outcome;
    let sha = deploy.deployed.sha.short();
    let mut title = if outcome == Outcome::Verifying {
        format!("{sha} verifying for {}", human(deploy.waited()))
    } else {
        let to = deploy
            .verdict
            .filter(|v| v.event == HistoryEvent::RolledBack)
            .and_then(|v| v.previous.as_ref())
            .map(|p| format!(" to {}", p.short()))
            .unwrap_or_default();
        format!(
            "{sha} {}{to} after {}",
            outcome.words(),
            human(deploy.waited())
        )
    };
    if outcome == Outcome::Replaced {
        title.push_str("\nno verdict recorded");
    }
    let _ = write!(title, "\ndeployed {}", when(deploy.deployed.at));
    if let Some(verdict) = deploy.verdict {
        append_person(&mut title, verdict);
    }
    let x = frame.x(deploy.deployed.at);
    let width = (frame.x(deploy.end) - x).max(MIN_BAR);
    let _ = write!(
        svg,
        r#"<rect class="{}" x="{x:.1}" y="{:.1}" width="{width:.1}" height="{BAR}" rx="2" fill="{}"><title>{}</title></rect>"#,
        outcome.class(),
        frame.lane_middle(lane) - BAR / 2.0,
        outcome.colour(),
        esc(&title)
    );
}

fn draw_arrow(svg: &mut String, frame: &Frame, from: usize, to: usize, entry: &HistoryEntry) {
    let mut title = format!(
        "{} rolled back to {}",
        entry.sha.short(),
        entry.previous.as_ref().map_or("?", Sha::short)
    );
    let _ = write!(title, "\n{}", when(entry.at));
    append_person(&mut title, entry);
    let x = frame.x(entry.at);
    let (y1, y2) = (frame.lane_middle(from), frame.lane_middle(to));
    // The head points at the target lane, up or down.
    let dir = if y2 > y1 { 1.0 } else { -1.0 };
    let tip = y2 - dir * (BAR / 2.0);
    let base = tip - dir * 6.0;
    let _ = write!(
        svg,
        r##"<g class="rollback"><title>{}</title><line x1="{x:.1}" y1="{y1:.1}" x2="{x:.1}" y2="{base:.1}" stroke="#c62828" stroke-width="1.5"/><polygon points="{:.1},{base:.1} {:.1},{base:.1} {x:.1},{tip:.1}" fill="#c62828"/></g>"##,
        esc(&title),
        x - 4.0,
        x + 4.0,
    );
}

/// How a point in the history is marked.
#[derive(Clone, Copy, Debug)]
enum Mark {
    /// A person's act.
    Act(&'static str, &'static str, &'static str),
    Suspect,
    HealthDown,
    HealthRecovered,
    CiPassed,
    /// A verdict without its deploy (out of the history, or already ended).
    Verdict(Outcome),
}

impl Mark {
    /// The mark of an event, if it gets one.
    fn of(event: HistoryEvent) -> Option<Self> {
        match event {
            HistoryEvent::Approved => Some(Self::Act("approved", "approved", "#6a1b9a")),
            HistoryEvent::BreakGlass => Some(Self::Act(
                "break-glass",
                "deployed outside the deploy windows",
                "#ef6c00",
            )),
            HistoryEvent::QuarantineCleared => Some(Self::Act(
                "quarantine-cleared",
                "cleared from quarantine",
                "#00838f",
            )),
            HistoryEvent::Suspect => Some(Self::Suspect),
            HistoryEvent::HealthDown => Some(Self::HealthDown),
            HistoryEvent::HealthRecovered => Some(Self::HealthRecovered),
            HistoryEvent::CiPassed => Some(Self::CiPassed),
            HistoryEvent::Deployed | HistoryEvent::HookSucceeded => None,
            HistoryEvent::Validated
            | HistoryEvent::RolledBack
            | HistoryEvent::Failed
            | HistoryEvent::Superseded => Outcome::of(event).map(Self::Verdict),
        }
    }
}

fn draw_mark(svg: &mut String, frame: &Frame, lane: usize, entry: &HistoryEntry, mark: Mark) {
    let sha = entry.sha.short();
    let (class, what, colour) = match mark {
        Mark::Act(class, words, colour) => (class, format!("{sha} {words}"), colour),
        Mark::Suspect => ("suspect", format!("{sha} became suspect"), "#f9a825"),
        Mark::HealthDown => ("health-down", format!("{sha} health down"), "#c62828"),
        Mark::HealthRecovered => (
            "health-recovered",
            format!("{sha} healthy again"),
            "#2e7d32",
        ),
        Mark::CiPassed => (
            "ci-passed",
            format!("{sha}: a later CI run passed"),
            "#2e7d32",
        ),
        Mark::Verdict(outcome) => {
            let to = entry
                .previous
                .as_ref()
                .filter(|_| outcome == Outcome::RolledBack)
                .map(|p| format!(" to {}", p.short()))
                .unwrap_or_default();
            (
                outcome.class(),
                format!("{sha} {}{to}", outcome.words()),
                outcome.colour(),
            )
        }
    };
    let mut title = format!("{what}\n{}", when(entry.at));
    append_person(&mut title, entry);
    let (x, y) = (frame.x(entry.at), frame.lane_middle(lane));
    let shape = match mark {
        Mark::Act(..) => format!(
            r##"<polygon points="{x:.1},{:.1} {:.1},{y:.1} {x:.1},{:.1} {:.1},{y:.1}" fill="{colour}" stroke="#fff"/>"##,
            y - 7.0,
            x + 6.0,
            y + 7.0,
            x - 6.0
        ),
        Mark::Suspect => format!(
            r##"<rect x="{:.1}" y="{:.1}" width="9" height="9" fill="{colour}" stroke="#fff"/>"##,
            x - 4.5,
            y - 4.5
        ),
        Mark::HealthDown | Mark::HealthRecovered => {
            let dir = if matches!(mark, Mark::HealthDown) {
                1.0
            } else {
                -1.0
            };
            format!(
                r##"<polygon points="{:.1},{:.1} {:.1},{:.1} {x:.1},{:.1}" fill="{colour}" stroke="#fff"/>"##,
                x - 5.0,
                y - dir * 5.0,
                x + 5.0,
                y - dir * 5.0,
                y + dir * 5.0
            )
        }
        Mark::CiPassed => format!(
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="#fff" stroke="{colour}" stroke-width="2"/>"##
        ),
        Mark::Verdict(_) => {
            format!(r##"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="{colour}" stroke="#fff"/>"##)
        }
    };
    let _ = write!(
        svg,
        r#"<g class="mark {class}"><title>{}</title>{shape}</g>"#,
        esc(&title)
    );
}

fn draw_now(svg: &mut String, frame: &Frame, now: Timestamp, bottom: f64) {
    let (x, top) = (frame.x(now), frame.top);
    let _ = write!(
        svg,
        r##"<line class="now" x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom:.1}" stroke="#555" stroke-dasharray="3 3"><title>now, {}</title></line>"##,
        esc(&when(now))
    );
}

// ----- words -----

/// Adds who acted and why to a title, on their own lines.
fn append_person(title: &mut String, entry: &HistoryEntry) {
    if let Some(by) = &entry.by {
        let _ = write!(title, "\nby {}", clip(by));
    }
    if let Some(reason) = &entry.reason {
        let _ = write!(title, "\n{}", clip(reason));
    }
}

/// A person's text, cut to [`TEXT_MAX`] characters.
fn clip(text: &str) -> String {
    match text.char_indices().nth(TEXT_MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `1 deploy`, `2 deploys`.
fn counted(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// An instant, in UTC to the second.
fn when(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A duration in its two largest units: `45 s`, `2 min 5 s`, `3 h 10 min`, `2 d 4 h`.
fn human(d: SignedDuration) -> String {
    let s = d.as_secs().unsigned_abs();
    let (big, big_unit, small, small_unit) = match s {
        0..60 => return format!("{s} s"),
        60..3600 => (s / 60, "min", s % 60, "s"),
        3600..86_400 => (s / 3600, "h", s % 3600 / 60, "min"),
        _ => (s / 86_400, "d", s % 86_400 / 3600, "h"),
    };
    if small == 0 {
        format!("{big} {big_unit}")
    } else {
        format!("{big} {big_unit} {small} {small_unit}")
    }
}

/// Text made safe inside an element or a quoted attribute: markup characters escaped,
/// characters XML does not allow dropped.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sha(c: char) -> Sha {
        c.to_string().repeat(40).parse().unwrap()
    }

    /// `seconds` after 2025-03-04 12:00:00 UTC.
    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_741_089_600 + seconds).unwrap()
    }

    fn entry(event: HistoryEvent, c: char, seconds: i64) -> HistoryEntry {
        HistoryEntry {
            at: at(seconds),
            event,
            sha: sha(c),
            previous: None,
            by: None,
            reason: None,
            url: None,
            output: None,
        }
    }

    fn rolled_back(c: char, to: char, seconds: i64) -> HistoryEntry {
        HistoryEntry {
            previous: Some(sha(to)),
            reason: Some("check build failed".into()),
            ..entry(HistoryEvent::RolledBack, c, seconds)
        }
    }

    fn by(mut e: HistoryEntry, who: &str, why: &str) -> HistoryEntry {
        e.by = Some(who.into());
        e.reason = Some(why.into());
        e
    }

    use HistoryEvent::{
        Approved, BreakGlass, CiPassed, Deployed, Failed, HealthDown, HealthRecovered,
        HookSucceeded, QuarantineCleared, RolledBack, Superseded, Suspect, Validated,
    };

    const EVENTS: [HistoryEvent; 13] = [
        Deployed,
        Validated,
        Superseded,
        RolledBack,
        Approved,
        BreakGlass,
        Suspect,
        QuarantineCleared,
        HookSucceeded,
        CiPassed,
        Failed,
        HealthDown,
        HealthRecovered,
    ];

    /// Whether `svg` is well formed as far as a page cares: one `<svg>` root, every tag
    /// closed in order, quoted attributes, and `&` only in the five entities written.
    fn well_formed(svg: &str) -> Result<(), String> {
        fn entities(text: &str) -> Result<(), String> {
            if text.contains(['<', '>']) {
                return Err(format!("markup character in {text:?}"));
            }
            for (i, _) in text.match_indices('&') {
                let rest = &text[i..];
                if !["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                    .iter()
                    .any(|e| rest.starts_with(e))
                {
                    return Err(format!("bare & in {text:?}"));
                }
            }
            Ok(())
        }
        if !svg.starts_with("<svg ") || !svg.ends_with("</svg>") {
            return Err("not one <svg> element".into());
        }
        let mut open: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            entities(&rest[..start])?;
            if open.is_empty() && start > 0 {
                return Err("text outside the root".into());
            }
            let end = rest[start..]
                .find('>')
                .ok_or_else(|| "unclosed tag".to_owned())?
                + start;
            let tag = &rest[start + 1..end];
            if !tag.matches('"').count().is_multiple_of(2) {
                return Err(format!("unbalanced quotes in <{tag}>"));
            }
            for value in tag.split('"').skip(1).step_by(2) {
                entities(value)?;
            }
            if let Some(name) = tag.strip_prefix('/') {
                match open.pop() {
                    Some(o) if o == name => {}
                    o => return Err(format!("</{name}> closes {o:?}")),
                }
            } else {
                let name = tag
                    .trim_end_matches('/')
                    .split_whitespace()
                    .next()
                    .unwrap_or("");
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphabetic()) {
                    return Err(format!("odd tag <{tag}>"));
                }
                if !tag.ends_with('/') {
                    open.push(name);
                }
            }
            rest = &rest[end + 1..];
            if open.is_empty() && !rest.is_empty() {
                return Err(format!("after the root: {rest:?}"));
            }
        }
        if open.is_empty() {
            Ok(())
        } else {
            Err(format!("unclosed {open:?}"))
        }
    }

    /// What every chart must be: well formed, an image with a label, fit for a strict CSP.
    fn check(svg: &str) {
        if let Err(why) = well_formed(svg) {
            panic!("{why}:\n{svg}");
        }
        assert!(svg.contains(r#"role="img""#));
        assert!(svg.contains(r#" aria-label=""#));
        assert!(svg.contains(r#"width="100%""#));
        assert!(svg.contains(r#"viewBox="0 0 "#));
        for banned in ["style=", "<script", "<style", " id=", "href", "NaN", "inf"] {
            assert!(!svg.contains(banned), "{banned} in {svg}");
        }
    }

    /// The text of every `<title>`.
    fn titles(svg: &str) -> Vec<&str> {
        svg.split("<title>")
            .skip(1)
            .map(|s| s.split("</title>").next().unwrap())
            .collect()
    }

    /// The value of attribute `name` in the first element whose opening tag starts with
    /// `opening`.
    fn attr(svg: &str, opening: &str, name: &str) -> f64 {
        let tag = svg
            .split(opening)
            .nth(1)
            .unwrap()
            .split('>')
            .next()
            .unwrap();
        let value = tag.split(&format!(" {name}=\"")).nth(1).unwrap();
        value.split('"').next().unwrap().parse().unwrap()
    }

    fn count(svg: &str, what: &str) -> usize {
        svg.matches(what).count()
    }

    #[test]
    fn one_validated_deploy_is_one_green_bar_with_its_time_to_verdict() {
        let history = [entry(Deployed, 'a', 0), entry(Validated, 'a', 125)];
        let svg = timeline(&history, at(600));
        check(&svg);
        assert_eq!(count(&svg, r#"class="validated""#), 1);
        assert_eq!(
            count(&svg, "<rect class="),
            1,
            "one bar, no lane stripe: {svg}"
        );
        assert_eq!(count(&svg, r#"class="lane-label""#), 1);
        assert!(svg.contains(">aaaaaaa</text>"));
        let bar = titles(&svg)
            .into_iter()
            .find(|t| t.starts_with("aaaaaaa validated"))
            .unwrap();
        assert_eq!(
            bar,
            "aaaaaaa validated after 2 min 5 s\ndeployed 2025-03-04 12:00:00 UTC"
        );
        assert!(svg.contains(">1 deploy, 0 rollbacks, median time to verdict 2 min 5 s</text>"));
        assert!(svg.contains(
            r#"aria-label="Deploy timeline of 1 commit from 2025-03-04 12:00:00 UTC to 2025-03-04 12:10:00 UTC: 1 deploy, 0 rollbacks, median time to verdict 2 min 5 s.""#
        ));
        assert_eq!(
            summary(&history, at(600)),
            Summary {
                deploys: 1,
                rollbacks: 0,
                median_to_verdict: Some(SignedDuration::from_secs(125)),
                verifying_for: None,
            }
        );
        // The bar runs from the deploy to the verdict, left of now's line.
        let x = attr(&svg, "<rect class=\"validated\"", "x");
        let width = attr(&svg, "<rect class=\"validated\"", "width");
        let now = attr(&svg, "<line class=\"now\"", "x1");
        assert!(
            x >= LEFT && x + width < now && now <= RIGHT,
            "{x} {width} {now}"
        );
        let scale_share = width / (now - x);
        assert!((scale_share - 125.0 / 600.0).abs() < 0.01, "{scale_share}");
    }

    #[test]
    fn a_rollback_is_a_red_bar_and_an_arrow_up_to_the_sha_restored() {
        let history = [
            entry(Deployed, 'a', 0),
            entry(Validated, 'a', 60),
            HistoryEntry {
                previous: Some(sha('a')),
                ..entry(Deployed, 'b', 120)
            },
            rolled_back('b', 'a', 300),
        ];
        let svg = timeline(&history, at(400));
        check(&svg);
        assert_eq!(count(&svg, r#"class="validated""#), 1);
        assert_eq!(count(&svg, r#"class="rolled-back""#), 1);
        assert_eq!(count(&svg, r#"<g class="rollback">"#), 1);
        assert_eq!(
            count(&svg, r#"class="mark"#),
            0,
            "the verdict is the bar's: {svg}"
        );
        let all = titles(&svg);
        assert!(all.contains(
            &"bbbbbbb rolled back to aaaaaaa after 3 min\ndeployed 2025-03-04 12:02:00 UTC\ncheck build failed"
        ));
        assert!(all.contains(
            &"bbbbbbb rolled back to aaaaaaa\n2025-03-04 12:05:00 UTC\ncheck build failed"
        ));
        // The arrow leaves b's lane (the second) at the rollback's instant, where b's bar
        // ends, and points up at a's lane (the first).
        let arrow = svg.split(r#"<g class="rollback">"#).nth(1).unwrap();
        let (y1, y2) = (attr(arrow, "<line", "y1"), attr(arrow, "<line", "y2"));
        let frame = Frame::new([].into_iter(), at(0), 1);
        assert!((y1 - frame.lane_middle(1)).abs() < 0.1, "{y1}");
        assert!(y2 < y1 && y2 > frame.lane_middle(0), "{y2}");
        let bar_end = attr(&svg, "<rect class=\"rolled-back\"", "x")
            + attr(&svg, "<rect class=\"rolled-back\"", "width");
        assert!((attr(arrow, "<line", "x1") - bar_end).abs() < 0.1);
        let s = summary(&history, at(400));
        assert_eq!((s.deploys, s.rollbacks), (2, 1));
        // Median of 60 s and 180 s.
        assert_eq!(s.median_to_verdict, Some(SignedDuration::from_secs(120)));
        assert!(svg.contains(">2 deploys, 1 rollback, median time to verdict 2 min</text>"));
    }

    #[test]
    fn a_manual_rollback_of_a_validated_sha_is_an_arrow_from_a_mark() {
        let history = [
            entry(Deployed, 'a', 0),
            entry(Validated, 'a', 60),
            entry(Deployed, 'b', 120),
            entry(Validated, 'b', 180),
            by(
                HistoryEntry {
                    previous: Some(sha('a')),
                    ..entry(RolledBack, 'b', 900)
                },
                "dave",
                "slow pages",
            ),
        ];
        let svg = timeline(&history, at(900));
        check(&svg);
        assert_eq!(count(&svg, r#"class="validated""#), 2);
        assert_eq!(count(&svg, r#"<g class="mark rolled-back">"#), 1);
        assert_eq!(count(&svg, r#"<g class="rollback">"#), 1);
        assert!(titles(&svg).contains(
            &"bbbbbbb rolled back to aaaaaaa\n2025-03-04 12:15:00 UTC\nby dave\nslow pages"
        ));
        let s = summary(&history, at(900));
        assert_eq!((s.deploys, s.rollbacks), (2, 1));
        assert_eq!(s.median_to_verdict, Some(SignedDuration::from_secs(60)));
    }

    #[test]
    fn a_rollback_to_a_sha_without_a_lane_has_no_arrow() {
        let history = [entry(Deployed, 'b', 0), rolled_back('b', 'a', 30)];
        let svg = timeline(&history, at(60));
        check(&svg);
        assert_eq!(count(&svg, r#"class="rolled-back""#), 1);
        assert_eq!(count(&svg, r#"class="rollback""#), 0);
        assert!(
            titles(&svg)
                .iter()
                .any(|t| t.starts_with("bbbbbbb rolled back to aaaaaaa after 30 s"))
        );
    }

    #[test]
    fn a_deploy_still_verifying_runs_to_now() {
        let history = [
            entry(Deployed, 'a', 0),
            entry(Validated, 'a', 100),
            entry(Deployed, 'b', 200),
        ];
        let svg = timeline(&history, at(290));
        check(&svg);
        assert_eq!(count(&svg, r#"class="verifying""#), 1);
        assert!(
            titles(&svg)
                .contains(&"bbbbbbb verifying for 1 min 30 s\ndeployed 2025-03-04 12:03:20 UTC")
        );
        let end = attr(&svg, "<rect class=\"verifying\"", "x")
            + attr(&svg, "<rect class=\"verifying\"", "width");
        assert!((end - attr(&svg, "<line class=\"now\"", "x1")).abs() < 0.1);
        assert_eq!(
            summary(&history, at(290)),
            Summary {
                deploys: 2,
                rollbacks: 0,
                median_to_verdict: Some(SignedDuration::from_secs(100)),
                verifying_for: Some(SignedDuration::from_secs(90)),
            }
        );
        assert!(svg.contains(">2 deploys, 0 rollbacks, median time to verdict 1 min 40 s</text>"));
        assert!(svg.contains(">verifying for 1 min 30 s</text>"));
        assert!(svg.contains("1 min 40 s, verifying for 1 min 30 s.\""));
    }

    #[test]
    fn the_first_deploy_verifying_has_no_verdict_yet() {
        let history = [entry(Deployed, 'a', 0)];
        let s = summary(&history, at(5));
        assert_eq!(s.median_to_verdict, None);
        assert_eq!(s.verifying_for, Some(SignedDuration::from_secs(5)));
        assert_eq!(
            s.to_string(),
            "1 deploy, 0 rollbacks, no verdict yet, verifying for 5 s"
        );
        check(&timeline(&history, at(5)));
    }

    #[test]
    fn now_before_the_history_draws_a_thin_bar_and_never_a_negative_wait() {
        let history = [entry(Deployed, 'a', 100)];
        let svg = timeline(&history, at(0));
        check(&svg);
        assert!((attr(&svg, "<rect class=\"verifying\"", "width") - MIN_BAR).abs() < 0.01);
        assert!(
            titles(&svg)
                .iter()
                .any(|t| t.starts_with("aaaaaaa verifying for 0 s"))
        );
        assert_eq!(
            summary(&history, at(0)).verifying_for,
            Some(SignedDuration::ZERO)
        );
    }

    #[test]
    fn a_superseded_deploy_is_grey_and_left_out_of_the_median() {
        let history = [
            entry(Deployed, 'a', 0),
            HistoryEntry {
                reason: Some("superseded by bbbbbbb".into()),
                ..entry(Superseded, 'a', 30)
            },
            entry(Deployed, 'b', 30),
            entry(Validated, 'b', 90),
        ];
        let svg = timeline(&history, at(100));
        check(&svg);
        assert_eq!(count(&svg, r#"class="superseded""#), 1);
        assert_eq!(count(&svg, r#"class="validated""#), 1);
        assert!(titles(&svg).contains(
            &"aaaaaaa superseded after 30 s\ndeployed 2025-03-04 12:00:00 UTC\nsuperseded by bbbbbbb"
        ));
        let s = summary(&history, at(100));
        assert_eq!(s.median_to_verdict, Some(SignedDuration::from_secs(60)));
        // Lanes in order of first deploy: a above b.
        let a = svg.find(">aaaaaaa</text>").unwrap();
        let b = svg.find(">bbbbbbb</text>").unwrap();
        assert!(a < b);
    }

    #[test]
    fn a_failed_deploy_has_its_own_colour_and_counts_as_a_verdict() {
        let history = [
            entry(Deployed, 'a', 0),
            HistoryEntry {
                reason: Some("hook migrate failed".into()),
                ..entry(Failed, 'a', 45)
            },
        ];
        let svg = timeline(&history, at(50));
        check(&svg);
        assert_eq!(count(&svg, r#"class="failed""#), 1);
        assert!(
            titles(&svg)
                .iter()
                .any(|t| t.starts_with("aaaaaaa failed after 45 s"))
        );
        assert_eq!(
            summary(&history, at(50)).median_to_verdict,
            Some(SignedDuration::from_secs(45))
        );
    }

    #[test]
    fn a_deploy_replaced_without_a_verdict_ends_where_the_next_starts() {
        let history = [entry(Deployed, 'a', 0), entry(Deployed, 'b', 60)];
        let svg = timeline(&history, at(120));
        check(&svg);
        assert_eq!(count(&svg, r#"class="replaced""#), 1);
        assert_eq!(count(&svg, r#"class="verifying""#), 1);
        assert!(titles(&svg).iter().any(|t| {
            t.starts_with("aaaaaaa replaced by the next deploy after 1 min\nno verdict recorded")
        }));
        let s = summary(&history, at(120));
        assert_eq!(s.median_to_verdict, None);
        assert_eq!(s.verifying_for, Some(SignedDuration::from_secs(60)));
    }

    #[test]
    fn a_redeployed_sha_keeps_its_lane() {
        let history = [
            entry(Deployed, 'a', 0),
            entry(Validated, 'a', 10),
            entry(Deployed, 'b', 20),
            rolled_back('b', 'a', 30),
            entry(Deployed, 'b', 40),
            entry(Validated, 'b', 50),
        ];
        let svg = timeline(&history, at(60));
        check(&svg);
        assert_eq!(count(&svg, r#"class="lane-label""#), 2);
        assert_eq!(count(&svg, r#"class="validated""#), 2);
        assert_eq!(count(&svg, r#"class="rolled-back""#), 1);
        let ys: Vec<f64> = svg
            .split("<rect class=\"")
            .skip(1)
            .filter(|r| r.starts_with("validated") || r.starts_with("rolled-back"))
            .map(|r| attr(&format!("<rect class=\"{r}"), "<rect", "y"))
            .collect();
        assert_eq!(ys.len(), 3);
        assert!(ys[0] < ys[1] && (ys[1] - ys[2]).abs() < 0.01, "{ys:?}");
    }

    #[test]
    fn people_s_acts_are_marks_with_who_and_why_escaped() {
        let hostile = r#"<script>&"'"#;
        let history = [
            by(
                entry(Approved, 'a', 0),
                hostile,
                "</title><script>alert(1)</script>",
            ),
            by(entry(BreakGlass, 'a', 5), "bob", "hotfix & rollback"),
            entry(Deployed, 'a', 5),
            entry(Validated, 'a', 65),
            by(entry(QuarantineCleared, 'a', 100), "carol", "flaky test"),
            by(entry(Suspect, 'a', 110), "", "re-run red"),
            HistoryEntry {
                reason: Some("3 checks failed".into()),
                ..entry(HealthDown, 'a', 120)
            },
            entry(HealthRecovered, 'a', 180),
            entry(CiPassed, 'a', 190),
            entry(HookSucceeded, 'a', 3),
        ];
        let svg = timeline(&history, at(200));
        check(&svg);
        for class in [
            "approved",
            "break-glass",
            "quarantine-cleared",
            "suspect",
            "health-down",
            "health-recovered",
            "ci-passed",
        ] {
            assert_eq!(
                count(&svg, &format!(r#"<g class="mark {class}">"#)),
                1,
                "{class}"
            );
        }
        assert_eq!(count(&svg, r#"<g class="mark"#), 7, "no mark for the hook");
        assert!(svg.contains("aaaaaaa approved\n2025-03-04 12:00:00 UTC\nby &lt;script&gt;&amp;&quot;&#39;\n&lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt;</title>"));
        assert!(titles(&svg).contains(
            &"aaaaaaa deployed outside the deploy windows\n2025-03-04 12:00:05 UTC\nby bob\nhotfix &amp; rollback"
        ));
        assert!(titles(&svg).contains(
            &"aaaaaaa cleared from quarantine\n2025-03-04 12:01:40 UTC\nby carol\nflaky test"
        ));
        assert!(
            titles(&svg).contains(&"aaaaaaa health down\n2025-03-04 12:02:00 UTC\n3 checks failed")
        );
    }

    #[test]
    fn control_characters_and_long_reasons_do_not_reach_the_page() {
        let history = [
            entry(Deployed, 'a', 0),
            by(
                entry(Approved, 'a', 0),
                "eve\u{0}\u{1b}[31m",
                &"x".repeat(5000),
            ),
        ];
        let svg = timeline(&history, at(10));
        check(&svg);
        assert!(!svg.contains(['\u{0}', '\u{1b}']));
        assert!(svg.contains("by eve[31m\n"));
        assert!(svg.contains(&format!("{}…</title>", "x".repeat(TEXT_MAX))));
        assert!(!svg.contains(&"x".repeat(TEXT_MAX + 1)));
    }

    #[test]
    fn nothing_deployed_says_so() {
        for history in [
            vec![],
            vec![entry(Approved, 'a', 0), entry(Validated, 'a', 5)],
        ] {
            let svg = timeline(&history, at(0));
            check(&svg);
            assert!(svg.contains(">No deploys yet</text>"));
            assert!(svg.contains(r#"aria-label="Deploy timeline: no deploys yet.""#));
            assert_eq!(summary(&history, at(0)).deploys, 0);
        }
        assert_eq!(
            summary(&[], at(0)),
            Summary {
                deploys: 0,
                rollbacks: 0,
                median_to_verdict: None,
                verifying_for: None,
            }
        );
    }

    #[test]
    fn entries_out_of_order_are_read_in_time_order() {
        let history = vec![
            entry(Deployed, 'a', 0),
            entry(Validated, 'a', 60),
            entry(Deployed, 'b', 120),
            rolled_back('b', 'a', 300),
            entry(Deployed, 'c', 400),
        ];
        let mut shuffled = history.clone();
        shuffled.reverse();
        shuffled.swap(1, 3);
        let now = at(500);
        assert_eq!(timeline(&shuffled, now), timeline(&history, now));
        assert_eq!(summary(&shuffled, now), summary(&history, now));
    }

    #[test]
    fn a_verdict_without_its_deploy_is_a_mark_not_a_bar() {
        // A verdict for a SHA whose deploy was cut from the history, one for another SHA
        // than the one in flight, and one recorded before its deploy.
        let history = [
            entry(Validated, 'b', 0),
            entry(Deployed, 'a', 10),
            entry(Validated, 'b', 20),
            entry(Validated, 'c', 25),
            entry(Deployed, 'c', 30),
        ];
        let svg = timeline(&history, at(40));
        check(&svg);
        assert_eq!(count(&svg, r#"<rect class="validated""#), 0);
        assert_eq!(
            count(&svg, r#"<g class="mark validated">"#),
            1,
            "c's; b has no lane"
        );
        assert_eq!(count(&svg, r#"class="lane-label""#), 2);
        assert_eq!(summary(&history, at(40)).median_to_verdict, None);
    }

    #[test]
    fn entries_at_one_instant_still_draw_a_visible_chart() {
        let history = [
            entry(Deployed, 'a', 0),
            entry(Validated, 'a', 0),
            entry(Deployed, 'b', 0),
            rolled_back('b', 'a', 0),
        ];
        let svg = timeline(&history, at(0));
        check(&svg);
        assert!(
            titles(&svg)
                .iter()
                .any(|t| t.starts_with("aaaaaaa validated after 0 s"))
        );
        assert!((attr(&svg, "<rect class=\"validated\"", "width") - MIN_BAR).abs() < 0.01);
        let x = attr(&svg, "<rect class=\"validated\"", "x");
        assert!(
            x > LEFT && x < RIGHT,
            "the instant sits inside the axis: {x}"
        );
        assert_eq!(count(&svg, r#"<g class="rollback">"#), 1);
        assert!(
            count(&svg, r#"<text class="tick""#) >= 2,
            "UTC and a time: {svg}"
        );
        assert_eq!(
            summary(&history, at(0)).median_to_verdict,
            Some(SignedDuration::ZERO)
        );
    }

    #[test]
    fn at_most_twenty_lanes_the_latest() {
        let digits: Vec<char> = "0123456789abcdef".chars().collect();
        let shas: Vec<Sha> = (0..25)
            .map(|i| {
                format!("{}{}", digits[i / 16], digits[i % 16])
                    .repeat(20)
                    .parse()
                    .unwrap()
            })
            .collect();
        let history: Vec<HistoryEntry> = shas
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                let t = i64::try_from(i).unwrap() * 100;
                [
                    HistoryEntry {
                        sha: s.clone(),
                        ..entry(Deployed, 'a', t)
                    },
                    HistoryEntry {
                        sha: s.clone(),
                        ..entry(Validated, 'a', t + 50)
                    },
                ]
            })
            .collect();
        let svg = timeline(&history, at(2500));
        check(&svg);
        assert_eq!(count(&svg, r#"class="lane-label""#), MAX_LANES);
        assert_eq!(count(&svg, r#"<rect class="validated""#), MAX_LANES);
        assert!(!svg.contains(&format!(">{}</text>", shas[4].short())));
        assert!(svg.contains(&format!(">{}</text>", shas[5].short())));
        assert!(svg.contains(">25 deploys, 0 rollbacks, median time to verdict 50 s</text>"));
        assert!(svg.contains(">the last 20 of 25 commits shown</text>"));
        // The axis starts at the first lane shown, not at the hidden ones.
        assert!(svg.contains("from 2025-03-04 12:08:20 UTC"));
        assert!(svg.contains(&format!(
            r#"viewBox="0 0 {WIDTH} {}""#,
            Frame::new([].into_iter(), at(0), 2).lane_top(MAX_LANES) + AXIS
        )));
    }

    #[test]
    fn ticks_are_times_within_a_day_and_dates_beyond() {
        let labels = |span: i64| -> Vec<String> {
            let history = [entry(Deployed, 'a', 0), entry(Validated, 'a', span)];
            let svg = timeline(&history, at(span));
            check(&svg);
            svg.split(r#"<text class="tick""#)
                .skip(2)
                .map(|t| {
                    t.split('>')
                        .nth(1)
                        .unwrap()
                        .trim_end_matches("</text")
                        .to_owned()
                })
                .collect()
        };
        let minutes = labels(30 * 60);
        assert!((3..=7).contains(&minutes.len()), "{minutes:?}");
        assert!(
            minutes.iter().all(|l| l.len() == 5 && l.starts_with("12:")),
            "{minutes:?}"
        );
        assert!(minutes.contains(&"12:10".to_owned()), "{minutes:?}");
        let seconds = labels(20);
        assert!(seconds.iter().all(|l| l.len() == 8), "{seconds:?}");
        let days = labels(9 * 86_400);
        assert!(days.iter().all(|l| l.starts_with("2025-03-")), "{days:?}");
        assert!((2..=7).contains(&days.len()), "{days:?}");
        let hours = labels(40 * 3600);
        assert!(
            hours.iter().all(|l| l.starts_with("03-0") && l.len() == 11),
            "{hours:?}"
        );
        let years = labels(40 * 365 * 86_400);
        assert!((2..=7).contains(&years.len()), "{years:?}");
    }

    #[test]
    fn the_ends_of_time_do_not_break_the_axis() {
        for (a, b) in [
            (Timestamp::MIN, Timestamp::MAX),
            (Timestamp::MIN, Timestamp::MIN),
            (Timestamp::MAX, Timestamp::MAX),
        ] {
            let history = [
                HistoryEntry {
                    at: a,
                    ..entry(Deployed, 'a', 0)
                },
                HistoryEntry {
                    at: b,
                    ..entry(Validated, 'a', 0)
                },
            ];
            check(&timeline(&history, a));
            check(&timeline(&history, b));
            let _ = summary(&history, b);
        }
    }

    #[test]
    fn durations_read_in_their_two_largest_units() {
        let d = SignedDuration::from_secs;
        assert_eq!(human(d(0)), "0 s");
        assert_eq!(human(SignedDuration::from_millis(900)), "0 s");
        assert_eq!(human(d(45)), "45 s");
        assert_eq!(human(d(60)), "1 min");
        assert_eq!(human(d(125)), "2 min 5 s");
        assert_eq!(human(d(3600)), "1 h");
        assert_eq!(human(d(3 * 3600 + 10 * 60 + 59)), "3 h 10 min");
        assert_eq!(human(d(2 * 86_400 + 4 * 3600 + 1)), "2 d 4 h");
        assert_eq!(human(d(-90)), "1 min 30 s");
    }

    #[test]
    fn the_median_of_an_even_count_is_the_midpoint() {
        let d = SignedDuration::from_secs;
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![d(7)]), Some(d(7)));
        assert_eq!(median(vec![d(30), d(10), d(20)]), Some(d(20)));
        assert_eq!(median(vec![d(40), d(10), d(20), d(1000)]), Some(d(30)));
        assert_eq!(
            median(vec![d(0), d(1)]),
            Some(SignedDuration::from_millis(500))
        );
    }

    #[test]
    fn the_well_formedness_check_catches_what_it_should() {
        assert!(well_formed(r#"<svg a="1"><g><title>x &amp; y</title></g><line/></svg>"#).is_ok());
        for bad in [
            "<svg><g></svg>",
            "<svg><g></svg></g>",
            "<svg>a < b</svg>",
            "<svg>a & b</svg>",
            r#"<svg a="1><g/></svg>"#,
            "<svg></svg><svg></svg>",
            "<svg><g>",
        ] {
            assert!(well_formed(bad).is_err(), "{bad}");
        }
    }

    /// Writes an example chart to `target/chart-example.svg`, to look at.
    #[test]
    fn writes_an_example() {
        let history = [
            entry(Deployed, '1', 0),
            entry(Validated, '1', 4 * 60 + 12),
            by(entry(Approved, '2', 40 * 60), "alice", "release 1.4"),
            HistoryEntry {
                previous: Some(sha('1')),
                ..entry(Deployed, '2', 41 * 60)
            },
            entry(Validated, '2', 46 * 60 + 30),
            HistoryEntry {
                previous: Some(sha('2')),
                ..entry(Deployed, '3', 3 * 3600)
            },
            rolled_back('3', '2', 3 * 3600 + 7 * 60),
            entry(CiPassed, '3', 3 * 3600 + 50 * 60),
            by(
                entry(QuarantineCleared, '3', 4 * 3600),
                "bob",
                "flaky check fixed",
            ),
            by(
                entry(BreakGlass, '3', 4 * 3600 + 5 * 60),
                "bob",
                "hotfix out of hours",
            ),
            entry(Deployed, '3', 4 * 3600 + 5 * 60),
            entry(Validated, '3', 4 * 3600 + 9 * 60),
            entry(Deployed, '4', 5 * 3600),
            HistoryEntry {
                reason: Some("superseded by 5555555".into()),
                ..entry(Superseded, '4', 5 * 3600 + 60)
            },
            entry(Deployed, '5', 5 * 3600 + 60),
            entry(Validated, '5', 5 * 3600 + 6 * 60),
            entry(HealthDown, '5', 6 * 3600),
            entry(HealthRecovered, '5', 6 * 3600 + 20 * 60),
            entry(Deployed, '6', 7 * 3600),
        ];
        let svg = timeline(&history, at(7 * 3600 + 5 * 60));
        check(&svg);
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/chart-example.svg");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{svg}\n")).unwrap();
    }

    fn arb_time() -> impl Strategy<Value = Timestamp> {
        prop_oneof![
            20 => (-200_000i64..200_000).prop_map(at),
            1 => (Timestamp::MIN.as_second()..=Timestamp::MAX.as_second())
                .prop_map(|s| Timestamp::from_second(s).unwrap()),
        ]
    }

    fn arb_entry() -> impl Strategy<Value = HistoryEntry> {
        let shas = "0123456789abcdef";
        (
            arb_time(),
            0..EVENTS.len(),
            0..6usize,
            proptest::option::of(0..6usize),
            proptest::option::of(any::<String>()),
            proptest::option::of(prop_oneof![any::<String>(), "[<>&\"' a-z]{0,20}"]),
        )
            .prop_map(move |(at, event, s, previous, by, reason)| {
                let pick = |i: usize| sha(shas.chars().nth(i).unwrap());
                HistoryEntry {
                    at,
                    event: EVENTS[event],
                    sha: pick(s),
                    previous: previous.map(pick),
                    by,
                    reason,
                    url: None,
                    output: None,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_history_draws_a_well_formed_chart(
            history in proptest::collection::vec(arb_entry(), 0..40),
            now in arb_time(),
        ) {
            let svg = timeline(&history, now);
            check(&svg);
            let s = summary(&history, now);
            prop_assert_eq!(
                s.deploys,
                history.iter().filter(|e| e.event == Deployed).count()
            );
            prop_assert!(s.median_to_verdict.is_none_or(|d| !d.is_negative()));
            prop_assert!(s.verifying_for.is_none_or(|d| !d.is_negative()));
            prop_assert!(count(&svg, r#"class="lane-label""#) <= MAX_LANES);
        }
    }
}
