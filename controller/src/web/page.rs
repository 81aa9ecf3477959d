//! The pages, rendered on the server as one string each: no template engine, every
//! text escaped by [`esc`], no inline script or style (the Content-Security-Policy
//! forbids them), links and forms only to this origin.

use std::fmt::Write as _;

use jiff::Timestamp;

use super::grid::{Banner, Cell, Grid};
use super::ports::{Person, ReleaseView};
use crate::{
    api::{
        Sha,
        environment::EnvironmentSpec,
        release::{CiState, HistoryEntry, HistoryEvent},
    },
    promote::{Kind, Plan},
};

/// Escapes text for HTML content and attribute values.
#[must_use]
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a path segment (namespace, name) for a URL.
#[must_use]
pub fn seg(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A link, only when it is http(s): a `javascript:` URL from a CI provider never
/// becomes a link.
fn link(url: Option<&str>, text: &str) -> String {
    match url {
        Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
            format!(
                "<a href=\"{}\" rel=\"noopener noreferrer\">{}</a>",
                esc(u),
                esc(text)
            )
        }
        _ => esc(text),
    }
}

/// How long ago `at` was, in a few characters.
#[must_use]
pub fn ago(at: Timestamp, now: Timestamp) -> String {
    let s = now.duration_since(at).as_secs();
    match s {
        i64::MIN..=4 => "just now".to_owned(),
        5..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

fn time(at: Timestamp, now: Timestamp) -> String {
    format!(
        "<time datetime=\"{at}\" title=\"{at}\">{}</time>",
        ago(at, now)
    )
}

/// The release page's address.
#[must_use]
pub fn release_url(key: &str) -> String {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    format!("/releases/{}/{}", seg(ns), seg(name))
}

/// Who is looking, for the header.
pub struct Viewer<'a> {
    /// The person logged in.
    pub person: Option<&'a Person>,
    /// The CSRF token of their forms.
    pub csrf: Option<&'a str>,
    /// Whether a login is possible at all.
    pub can_login: bool,
    /// Whether logging out means anything (a session, not a proxy's header).
    pub can_logout: bool,
}

/// A whole page around `body`; `live` is the address of the fragment that replaces
/// `#live` when the server says something changed.
#[must_use]
pub fn layout(
    title: &str,
    viewer: &Viewer<'_>,
    live: Option<&str>,
    flash: &str,
    body: &str,
) -> String {
    let mut who = String::new();
    match (viewer.person, viewer.csrf) {
        (Some(p), Some(csrf)) if viewer.can_logout => {
            let _ = write!(
                who,
                "<form method=\"post\" action=\"/logout\" class=\"inline\"><span class=\"who\">{}</span> \
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\" class=\"link\">Log out</button></form>",
                esc(&p.name),
                esc(csrf)
            );
        }
        (Some(p), _) => {
            let _ = write!(who, "<span class=\"who\">{}</span>", esc(&p.name));
        }
        (None, _) if viewer.can_login => who.push_str("<a href=\"/login\">Log in</a>"),
        (None, _) => who.push_str("<span class=\"who\">read-only</span>"),
    }
    let live_attr = live
        .map(|l| format!(" data-live=\"{}\"", esc(l)))
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Vigie</title>\
         <link rel=\"stylesheet\" href=\"/assets/app.css\">\
         <link rel=\"icon\" href=\"data:,\">\
         <script src=\"/assets/app.js\" defer></script></head>\
         <body><a class=\"skip\" href=\"#live\">Skip to content</a>\
         <header><a class=\"brand\" href=\"/\">Vigie</a><nav>{who}</nav></header>{flash}\
         <main id=\"live\" tabindex=\"-1\"{live_attr}>{body}</main></body></html>\n",
        title = esc(title),
    )
}

/// The front page's live part: notices, then one grid per namespace.
#[must_use]
pub fn board(grids: &[Grid], notices: &[String], error: Option<&str>, now: Timestamp) -> String {
    let mut out = String::new();
    if let Some(e) = error {
        let _ = write!(
            out,
            "<p class=\"banner down\" role=\"alert\">What runs cannot be read now: {}</p>",
            esc(e)
        );
    }
    for n in notices {
        let _ = write!(
            out,
            "<p class=\"banner notice\" role=\"status\">{}</p>",
            esc(n)
        );
    }
    if grids.is_empty() && error.is_none() {
        out.push_str("<p class=\"empty\">No environments, code locations or Releases yet.</p>");
    }
    for g in grids {
        grid(&mut out, g, now);
    }
    out
}

fn grid(out: &mut String, g: &Grid, now: Timestamp) {
    let _ = write!(
        out,
        "<section class=\"ns\" aria-labelledby=\"ns-{id}\"><h2 id=\"ns-{id}\">{ns}</h2>",
        id = esc(&g.namespace),
        ns = esc(&g.namespace)
    );
    let banners: Vec<String> = g
        .columns
        .iter()
        .flat_map(|c| {
            c.banners.iter().map(move |b| match b {
                Banner::WindowClosed { until: Some(t) } => format!(
                    "<p class=\"banner window\" role=\"status\"><strong>{}</strong>: the deploy windows are closed until {} ({}); changes wait, rollbacks do not.</p>",
                    esc(&c.name),
                    esc(&t.to_string()),
                    ago_future(*t, now)
                ),
                Banner::WindowClosed { until: None } => format!(
                    "<p class=\"banner window\" role=\"status\"><strong>{}</strong>: the deploy windows never open; changes wait.</p>",
                    esc(&c.name)
                ),
                Banner::BackendDown { reason } => format!(
                    "<p class=\"banner down\" role=\"alert\"><strong>{}</strong>: the backend does not answer: {}</p>",
                    esc(&c.name),
                    esc(reason)
                ),
            })
        })
        .collect();
    for b in banners {
        out.push_str(&b);
    }
    out.push_str("<div class=\"scroll\"><table class=\"grid\"><thead><tr><th scope=\"col\">Code location</th>");
    for c in &g.columns {
        let from = c
            .from
            .as_ref()
            .map(|(f, manual)| {
                format!(
                    "<span class=\"from\">from {}{}</span>",
                    esc(f),
                    if *manual { ", approved" } else { "" }
                )
            })
            .unwrap_or_default();
        let _ = write!(
            out,
            "<th scope=\"col\" data-env=\"{n}\">{n}{from}</th>",
            n = esc(&c.name)
        );
    }
    out.push_str("</tr></thead><tbody>");
    for r in &g.rows {
        let _ = write!(
            out,
            "<tr><th scope=\"row\" title=\"{}\">{}</th>",
            esc(&r.repo),
            esc(&r.location)
        );
        for (c, col) in r.cells.iter().zip(&g.columns) {
            match c {
                Some(c) => cell(out, c, &col.name, now),
                None => out.push_str("<td class=\"none\">—</td>"),
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div></section>");
}

fn ago_future(t: Timestamp, now: Timestamp) -> String {
    let s = t.duration_since(now).as_secs().max(0);
    match s {
        0..=59 => "in less than a minute".to_owned(),
        60..=3599 => format!("in {} min", s / 60),
        3600..=86_399 => format!("in {} h", s / 3600),
        _ => format!("in {} d", s / 86_400),
    }
}

fn short(sha: &Sha) -> String {
    format!(
        "<code title=\"{s}\">{}</code>",
        esc(sha.short()),
        s = esc(sha.as_str())
    )
}

fn cell(out: &mut String, c: &Cell, env: &str, _now: Timestamp) {
    let _ = write!(
        out,
        "<td class=\"cell {cls}\" data-release=\"{rel}\" data-env=\"{env}\" data-phase=\"{cls}\">\
         <a class=\"open\" href=\"{url}\"><span class=\"badge {cls}\">{label}</span> ",
        cls = c.badge.class(),
        rel = esc(&c.release),
        env = esc(env),
        url = esc(&release_url(&c.release)),
        label = c.badge.label()
    );
    match &c.deployed {
        Some(d) => {
            let _ = write!(
                out,
                "<span class=\"sha\" data-sha=\"{}\">{}</span>",
                esc(d.as_str()),
                short(d)
            );
        }
        None => out.push_str("<span class=\"sha\">nothing runs</span>"),
    }
    out.push_str("</a>");
    if let Some(subject) = &c.subject {
        let _ = write!(out, "<span class=\"subject\">{}</span>", esc(subject));
    }
    let mut facts = Vec::new();
    if let Some(d) = &c.desired {
        facts.push(format!("→ {}", short(d)));
    }
    if let Some(v) = &c.validated {
        facts.push(format!("validated {}", short(v)));
    }
    if let Some(ci) = &c.ci {
        let state = ci_word(ci.state);
        facts.push(format!(
            "<span class=\"ci {state}\">CI {} {}</span>",
            link(ci.url.as_deref(), state),
            short(&ci.sha)
        ));
    }
    if let Some(t) = &c.tracking {
        facts.push(format!("<span class=\"track\">follows {}</span>", esc(t)));
    }
    for q in &c.quarantined {
        facts.push(format!(
            "<span class=\"quarantined\">quarantined {}</span>",
            short(q)
        ));
    }
    for s in &c.suspect {
        facts.push(format!(
            "<span class=\"suspect\">suspect {}</span>",
            short(s)
        ));
    }
    if let Some(h) = &c.health {
        facts.push(format!("<span class=\"health\">{}</span>", esc(h)));
    }
    if !facts.is_empty() {
        out.push_str("<ul class=\"facts\">");
        for f in facts {
            let _ = write!(out, "<li>{f}</li>");
        }
        out.push_str("</ul>");
    }
    if let Some(m) = &c.message {
        let _ = write!(out, "<p class=\"message\">{}</p>", esc(m));
    }
    out.push_str("</td>");
}

fn ci_word(state: CiState) -> &'static str {
    match state {
        CiState::Pending => "pending",
        CiState::Success => "success",
        CiState::Failure => "failure",
        CiState::Error => "error",
    }
}

fn event_word(e: HistoryEvent) -> (&'static str, &'static str) {
    match e {
        HistoryEvent::Deployed => ("deployed", "deploying"),
        HistoryEvent::Validated => ("validated", "validated"),
        HistoryEvent::Superseded => ("superseded", "pending"),
        HistoryEvent::RolledBack => ("rolled back", "rolled-back"),
        HistoryEvent::Approved => ("approved", "approval"),
        HistoryEvent::BreakGlass => ("break-glass", "failed"),
        HistoryEvent::Suspect => ("became suspect", "failed"),
        HistoryEvent::QuarantineCleared => ("quarantine cleared", "approval"),
        HistoryEvent::HookSucceeded => ("hook succeeded", "verifying"),
        HistoryEvent::CiPassed => ("CI passed later", "validated"),
        HistoryEvent::Failed => ("failed", "failed"),
        HistoryEvent::HealthDown => ("health down", "failed"),
        HistoryEvent::HealthRecovered => ("health recovered", "validated"),
    }
}

/// What the Release page shows besides the Release itself.
pub struct ReleaseFacts<'a> {
    /// The Release's cell (badge, SHAs, CI), as on the grid.
    pub cell: Option<&'a Cell>,
    /// Its Environment's spec.
    pub env: Option<&'a EnvironmentSpec>,
    /// The commits between what runs and what is asked for, or why they are not listed.
    pub commits: Option<Result<(Vec<crate::git::Commit>, bool), String>>,
    /// The timeline drawn.
    pub chart: String,
}

/// The Release page's live part.
#[must_use]
#[allow(clippy::too_many_lines, reason = "one page, read top to bottom")]
pub fn release(
    r: &ReleaseView,
    facts: &ReleaseFacts<'_>,
    viewer: &Viewer<'_>,
    now: Timestamp,
) -> String {
    let s = &r.status;
    let mut out = String::new();
    let _ = write!(
        out,
        "<nav class=\"crumbs\"><a href=\"/\">All environments</a> › {ns}</nav>\
         <h1>{loc} <span class=\"in\">in</span> {env}</h1>",
        ns = esc(&r.namespace),
        loc = esc(&r.location),
        env = esc(&r.environment)
    );
    if let Some(c) = facts.cell {
        out.push_str("<table class=\"grid one\"><tbody><tr>");
        cell(&mut out, c, &r.environment, now);
        out.push_str("</tr></tbody></table>");
    }
    out.push_str("<dl class=\"facts wide\">");
    let mut fact = |k: &str, v: String| {
        let _ = write!(out, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    };
    fact("Release", esc(&r.key()));
    fact("Phase", esc(s.phase.as_str()));
    if let Some(since) = s.phase_since {
        fact("Since", time(since, now));
    }
    fact(
        "Asked for",
        r.revision.as_deref().map_or_else(|| "—".to_owned(), esc),
    );
    for (k, v) in [
        ("Desired", &s.desired_sha),
        ("Deployed", &s.deployed_sha),
        ("Validated", &s.validated_sha),
    ] {
        fact(k, v.as_ref().map_or_else(|| "—".to_owned(), short));
    }
    if let Some(ci) = &s.ci {
        let mut v = format!(
            "{} for {}",
            link(ci.url.as_deref(), ci_word(ci.state)),
            short(&ci.sha)
        );
        if let Some(d) = &ci.description {
            let _ = write!(v, " — {}", esc(d));
        }
        fact("CI", v);
        if !ci.failed_checks.is_empty() {
            fact(
                "Failed checks",
                ci.failed_checks
                    .iter()
                    .map(|c| format!("<span class=\"check\">{}</span>", esc(c)))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
    }
    if let Some(m) = &s.message {
        fact("Message", esc(m));
    }
    out.push_str("</dl>");

    actions(&mut out, r, facts.env, viewer);

    let _ = write!(
        out,
        "<section aria-labelledby=\"chart\"><h2 id=\"chart\">Timeline</h2>{}</section>",
        facts.chart
    );

    out.push_str("<section aria-labelledby=\"commits\"><h2 id=\"commits\">Commits between what runs and what is asked for</h2>");
    match &facts.commits {
        None => out.push_str(
            "<p class=\"empty\">Nothing is in flight: what runs is what is asked for.</p>",
        ),
        Some(Err(e)) => {
            let _ = write!(
                out,
                "<p class=\"empty\">They cannot be listed: {}</p>",
                esc(e)
            );
        }
        Some(Ok((commits, more))) => {
            commit_list(&mut out, commits, *more);
        }
    }
    out.push_str("</section>");

    out.push_str("<section aria-labelledby=\"history\"><h2 id=\"history\">History</h2>");
    if s.history.is_empty() {
        out.push_str("<p class=\"empty\">Nothing happened yet.</p>");
    } else {
        out.push_str("<ol class=\"history\" reversed>");
        for h in s.history.iter().rev() {
            history_entry(&mut out, h, now);
        }
        out.push_str("</ol>");
    }
    out.push_str("</section>");

    out.push_str("<section aria-labelledby=\"conditions\"><h2 id=\"conditions\">Conditions</h2><div class=\"scroll\"><table class=\"conditions\"><thead><tr><th scope=\"col\">Type</th><th scope=\"col\">Status</th><th scope=\"col\">Reason</th><th scope=\"col\">Message</th><th scope=\"col\">Since</th></tr></thead><tbody>");
    for c in &s.conditions {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.type_),
            c.status,
            esc(&c.reason),
            esc(&c.message),
            time(c.last_transition_time, now)
        );
    }
    out.push_str("</tbody></table></div></section>");
    out
}

fn commit_list(out: &mut String, commits: &[crate::git::Commit], more: bool) {
    if commits.is_empty() {
        out.push_str("<p class=\"empty\">No commits.</p>");
        return;
    }
    out.push_str("<ul class=\"commits\">");
    for c in commits {
        let _ = write!(
            out,
            "<li>{} {} <span class=\"author\">{}</span></li>",
            short(&c.sha),
            esc(&c.subject),
            esc(&c.author)
        );
    }
    if more {
        out.push_str("<li class=\"more\">… and more</li>");
    }
    out.push_str("</ul>");
}

fn history_entry(out: &mut String, h: &HistoryEntry, now: Timestamp) {
    let (word, cls) = event_word(h.event);
    let _ = write!(
        out,
        "<li class=\"event {cls}\">{} <span class=\"badge {cls}\">{word}</span> {}",
        time(h.at, now),
        short(&h.sha)
    );
    if let Some(p) = &h.previous {
        let _ = write!(
            out,
            " {} {}",
            if h.event == HistoryEvent::RolledBack {
                "to"
            } else {
                "over"
            },
            short(p)
        );
    }
    if let Some(by) = &h.by {
        let _ = write!(out, " by <strong>{}</strong>", esc(by));
    }
    if let Some(reason) = &h.reason {
        let _ = write!(out, ": {}", esc(reason));
    }
    if let Some(u) = &h.url {
        let _ = write!(out, " ({})", link(Some(u), "run"));
    }
    if let Some(o) = &h.output {
        let _ = write!(out, " <span class=\"output\">output: {}</span>", esc(o));
    }
    out.push_str("</li>");
}

fn actions(out: &mut String, r: &ReleaseView, env: Option<&EnvironmentSpec>, viewer: &Viewer<'_>) {
    out.push_str(
        "<section aria-labelledby=\"actions\" class=\"actions\"><h2 id=\"actions\">Actions</h2>",
    );
    let (Some(_), Some(csrf)) = (viewer.person, viewer.csrf) else {
        if viewer.can_login {
            out.push_str(
                "<p><a href=\"/login\">Log in</a> to promote, roll back or clear a quarantine.</p>",
            );
        } else {
            out.push_str("<p>This page is read-only: no login is configured.</p>");
        }
        out.push_str("</section>");
        return;
    };
    let base = release_url(&r.key());
    if let Some(p) = env.and_then(|e| e.promotion.as_ref()) {
        let _ = write!(
            out,
            "<a class=\"button\" id=\"promote\" href=\"{base}/promote\">Promote from {}…</a> ",
            esc(&p.from)
        );
    }
    let _ = write!(
        out,
        "<a class=\"button danger\" id=\"rollback\" href=\"{base}/rollback\">Roll back…</a>"
    );
    for q in &r.status.quarantine {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"{base}/clear-quarantine\" class=\"clear\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"sha\" value=\"{sha}\">\
             <label>Clear the quarantine of {short} ({why}) — reason \
             <input name=\"reason\" required minlength=\"3\" maxlength=\"1024\" autocomplete=\"off\"></label> \
             <button type=\"submit\">Clear</button></form>",
            csrf = esc(csrf),
            sha = esc(q.sha.as_str()),
            short = short(&q.sha),
            why = esc(&q.reason),
        );
    }
    out.push_str("</section>");
}

/// The page a person reads before confirming a promotion or a rollback: both sides,
/// the commits, and a field where they type the confirmation word.
#[must_use]
pub fn plan(kind: Kind, release: &str, plan: &Plan, csrf: &str, error: Option<&str>) -> String {
    let mut out = String::new();
    let (verb, word) = match kind {
        Kind::Promote => ("Promote", kind.confirm()),
        Kind::Rollback => ("Roll back", kind.confirm()),
    };
    let _ = write!(
        out,
        "<nav class=\"crumbs\"><a href=\"/\">All environments</a> › <a href=\"{}\">{}</a></nav><h1>{verb} {} in {}</h1>",
        esc(&release_url(release)),
        esc(release),
        esc(&plan.location),
        esc(&plan.target.environment)
    );
    if let Some(e) = error {
        let _ = write!(
            out,
            "<p class=\"banner down\" role=\"alert\">{}</p>",
            esc(e)
        );
    }
    out.push_str("<div class=\"sides\">");
    let sides: Vec<(&str, &crate::promote::Side)> = match kind {
        Kind::Promote => vec![("From", &plan.upstream), ("To", &plan.target)],
        Kind::Rollback => vec![("In", &plan.target)],
    };
    for (label, side) in sides {
        let _ = write!(
            out,
            "<div class=\"side\"><h2>{label} {}</h2><dl class=\"facts\"><dt>Phase</dt><dd>{}</dd><dt>Deployed</dt><dd>{}</dd><dt>Validated</dt><dd>{}</dd></dl></div>",
            esc(&side.environment),
            esc(side.phase.as_deref().unwrap_or("no Release yet")),
            side.deployed.as_ref().map_or_else(|| "—".to_owned(), short),
            side.validated
                .as_ref()
                .map_or_else(|| "—".to_owned(), short),
        );
    }
    out.push_str("</div>");
    let _ = write!(
        out,
        "<p class=\"change\"><strong>{}</strong> {} replaces {}</p>",
        short(&plan.sha),
        if kind == Kind::Promote {
            "will run and"
        } else {
            "is restored and"
        },
        plan.from
            .as_ref()
            .map_or_else(|| "nothing".to_owned(), short)
    );
    if kind == Kind::Promote {
        out.push_str("<h2>Commits it brings</h2>");
    } else {
        out.push_str("<h2>Commits it undoes</h2>");
    }
    if let Some(e) = &plan.commits_error {
        let _ = write!(
            out,
            "<p class=\"empty\">They cannot be listed: {}</p>",
            esc(e)
        );
    } else {
        commit_list(&mut out, &plan.commits, plan.more_commits);
    }
    if let Some(w) = &plan.window_closed {
        let _ = write!(
            out,
            "<p class=\"banner window\" role=\"status\">{}: give a break-glass reason to deploy anyway, on the record.</p>",
            esc(w)
        );
    }
    let _ = write!(
        out,
        "<form method=\"post\" class=\"confirm\" data-confirm=\"{word}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"sha\" value=\"{sha}\">\
         <label>Why (recorded) <input name=\"reason\" maxlength=\"1024\" autocomplete=\"off\"></label>",
        csrf = esc(csrf),
        sha = esc(plan.sha.as_str())
    );
    if kind == Kind::Promote && plan.window_closed.is_some() {
        out.push_str("<label>Break-glass reason <input name=\"break_glass\" minlength=\"3\" maxlength=\"1024\" autocomplete=\"off\"></label>");
    }
    let _ = write!(
        out,
        "<label>Type <strong>{word}</strong> to confirm <input name=\"confirm\" id=\"confirm\" required autocomplete=\"off\" autocapitalize=\"characters\" spellcheck=\"false\"></label>\
         <button type=\"submit\" id=\"confirm-button\" class=\"{}\">{verb}</button></form>",
        if kind == Kind::Rollback { "danger" } else { "" }
    );
    out
}

/// The login form.
#[must_use]
pub fn login(asks_for: &str, error: Option<&str>) -> String {
    let mut out = String::from("<h1>Log in</h1>");
    if let Some(e) = error {
        let _ = write!(
            out,
            "<p class=\"banner down\" role=\"alert\">{}</p>",
            esc(e)
        );
    }
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/login\" class=\"login\"><label>Token: {} \
         <input type=\"password\" name=\"token\" id=\"token\" required autocomplete=\"current-password\"></label> \
         <button type=\"submit\" id=\"login-button\">Log in</button></form>",
        esc(asks_for)
    );
    out
}

/// A page saying one thing, with a way back.
#[must_use]
pub fn message(title: &str, text: &str, back: &str) -> String {
    format!(
        "<h1>{}</h1><p class=\"message\" role=\"alert\">{}</p><p><a href=\"{}\">Back</a></p>",
        esc(title),
        esc(text),
        esc(back)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_only_http_links_are_links() {
        assert_eq!(
            esc("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(link(Some("javascript:alert(1)"), "run"), "run");
        assert!(
            link(Some("https://ci/1?a=<b>"), "run").contains("href=\"https://ci/1?a=&lt;b&gt;\"")
        );
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
        assert_eq!(release_url("apps/web-prod"), "/releases/apps/web-prod");
    }

    #[test]
    fn times_read_as_people_say_them() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let at = |s: i64| Timestamp::from_second(1_000_000 - s).unwrap();
        assert_eq!(ago(at(0), now), "just now");
        assert_eq!(
            ago(at(-30), now),
            "just now",
            "a clock ahead is not the future"
        );
        assert_eq!(ago(at(42), now), "42 s ago");
        assert_eq!(ago(at(125), now), "2 min ago");
        assert_eq!(ago(at(7300), now), "2 h ago");
        assert_eq!(ago(at(200_000), now), "2 d ago");
    }
}
