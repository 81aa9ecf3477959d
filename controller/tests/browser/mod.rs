//! Harness of the tests in a real browser: Debian's headless Chromium, driven through
//! chromedriver by a small W3C WebDriver client (plain HTTP/1.1 on 127.0.0.1, blocking,
//! like the rest of `tests/`).
//!
//! A test starts with `if !browser_available() { return; }`: with `VIGIE_E2E_BROWSER=1`
//! (set by `make test`) a missing chromium or chromedriver fails it with the install
//! hint; without it the test is skipped. Each [`Browser`] has its own chromedriver, its
//! own profile in a temporary directory, and a viewport of an exact size; dropping it
//! quits Chromium and stops chromedriver. When the test fails, the page's URL, text,
//! console and a screenshot are kept in `target/e2e-browser/<test>/`.
//!
//! WebDriver failures panic with the command and the driver's error and message.

#![allow(dead_code, reason = "each test binary uses part of the harness")]

use std::{
    cell::RefCell,
    fmt,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What `make deps` installs, said when chromium or chromedriver is missing.
const HINT: &str = "chromium and chromedriver for the browser tests (Debian: chromium, \
                    chromium-driver; make deps installs them)";

/// The viewport of [`Browser::start`].
pub const DESKTOP: (u32, u32) = (1280, 800);
/// The viewport of [`Browser::start_phone`]: a common phone's, in CSS pixels.
pub const PHONE: (u32, u32) = (390, 844);

/// How long one WebDriver command may take (page loads are capped lower, at
/// [`PAGE_LOAD`]).
const COMMAND: Duration = Duration::from_secs(60);
/// The session's page-load timeout.
const PAGE_LOAD: Duration = Duration::from_secs(30);
/// The session's script timeout.
const SCRIPT: Duration = Duration::from_secs(10);
/// How long chromedriver may take to say it is ready.
const DRIVER_READY: Duration = Duration::from_secs(20);
/// Between two looks of the `wait_*` methods.
const POLL: Duration = Duration::from_millis(50);

/// W3C WebDriver's key of an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Keys for [`Browser::press`], [`Browser::keys`] and [`Element::send_keys`] (WebDriver's
/// code points).
pub mod key {
    /// Backspace.
    pub const BACKSPACE: &str = "\u{E003}";
    /// Tab.
    pub const TAB: &str = "\u{E004}";
    /// Enter (return).
    pub const ENTER: &str = "\u{E007}";
    /// Shift (held while the next keys of a [`super::Browser::press`] chord go down).
    pub const SHIFT: &str = "\u{E008}";
    /// Control.
    pub const CONTROL: &str = "\u{E009}";
    /// Escape.
    pub const ESCAPE: &str = "\u{E00C}";
    /// Space.
    pub const SPACE: &str = "\u{E00D}";
    /// End.
    pub const END: &str = "\u{E010}";
    /// Home.
    pub const HOME: &str = "\u{E011}";
    /// Arrow left.
    pub const LEFT: &str = "\u{E012}";
    /// Arrow up.
    pub const UP: &str = "\u{E013}";
    /// Arrow right.
    pub const RIGHT: &str = "\u{E014}";
    /// Arrow down.
    pub const DOWN: &str = "\u{E015}";
}

/// Whether the browser tests run; panics, with the install hint, when they must
/// (`VIGIE_E2E_BROWSER=1`) and cannot.
pub fn browser_available() -> bool {
    let ok = tools().is_some();
    if !ok {
        super::skip::skip(HINT, "VIGIE_E2E_BROWSER");
    }
    ok
}

/// chromedriver and the Chromium it starts.
struct Tools {
    chromedriver: PathBuf,
    chromium: PathBuf,
}

fn tools() -> Option<Tools> {
    Some(Tools {
        chromedriver: on_path("chromedriver")?,
        // Debian's is /usr/bin/chromium, a script that runs /usr/lib/chromium/chromium.
        chromium: on_path("chromium").or_else(|| {
            let debian = PathBuf::from("/usr/bin/chromium");
            executable(&debian).then_some(debian)
        })?,
    })
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A headless Chromium under a chromedriver of its own.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    /// The profile (`--user-data-dir`) and chromedriver's log; removed on drop.
    dir: PathBuf,
    /// Whether the viewport is a phone's (`<meta name="viewport">` honoured).
    mobile: bool,
    /// The console's entries read so far, kept for a failure's evidence.
    console: RefCell<Vec<LogEntry>>,
}

impl Browser {
    /// A desktop browser, its viewport [`DESKTOP`].
    pub fn start() -> Self {
        Self::start_with_size(DESKTOP.0, DESKTOP.1)
    }

    /// A desktop browser whose viewport (`innerWidth` × `innerHeight`) is exactly
    /// `width` × `height` CSS pixels, however narrow.
    pub fn start_with_size(width: u32, height: u32) -> Self {
        Self::launch(width, height, false)
    }

    /// A phone: a [`PHONE`] viewport in mobile mode, where `<meta name="viewport">`
    /// counts (a page without one is laid out 980 pixels wide, as on a real phone).
    pub fn start_phone() -> Self {
        Self::launch(PHONE.0, PHONE.1, true)
    }

    fn launch(width: u32, height: u32, mobile: bool) -> Self {
        let tools = tools().unwrap_or_else(|| panic!("cannot start a browser without {HINT}"));
        let dir = scratch_dir();
        let port = free_port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
        let driver = {
            use std::os::unix::process::CommandExt as _;
            Command::new(&tools.chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                // Its own group, so that drop ends Chromium's processes with it.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("{} does not start: {e}", tools.chromedriver.display()))
        };
        let mut browser = Self {
            driver,
            port,
            session: String::new(),
            dir,
            mobile,
            console: RefCell::default(),
        };
        browser.wait_driver();
        let profile = browser.dir.join("profile");
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {
                "implicit": 0,
                "pageLoad": millis(PAGE_LOAD),
                "script": millis(SCRIPT),
            },
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": tools.chromium,
                "args": [
                    "--headless=new",
                    // The tests run as root, where Chromium's sandbox cannot.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-search-engine-choice-screen",
                    "--password-store=basic",
                ],
            },
        }}});
        let created = browser.request("POST", "/session", Some(&capabilities));
        created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("WebDriver POST /session: no sessionId in {created}"))
            .clone_into(&mut browser.session);
        browser.set_window_size(width, height);
        browser
    }

    /// Polls chromedriver's `/status` until it is ready; panics with its log when it
    /// exits or stays silent.
    fn wait_driver(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(status) = call(self.port, "GET", "/status", None)
                && status["ready"] == true
            {
                return;
            }
            if let Ok(Some(exit)) = self.driver.try_wait() {
                panic!(
                    "chromedriver exited ({exit}) before it was ready:\n{}",
                    self.driver_log()
                );
            }
            assert!(
                start.elapsed() < DRIVER_READY,
                "chromedriver is not ready after {DRIVER_READY:?}:\n{}",
                self.driver_log()
            );
            std::thread::sleep(POLL);
        }
    }

    /// chromedriver's output so far.
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("chromedriver.log")).unwrap_or_default()
    }

    /// Makes the viewport exactly `width` × `height` CSS pixels, at a device pixel
    /// ratio of 1 (screenshots are that many pixels). The window is resized too, though
    /// Chromium keeps it at least 500 pixels wide.
    pub fn set_window_size(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/window/rect",
            Some(&json!({ "width": width, "height": height })),
        );
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            &json!({
                "width": width,
                "height": height,
                "deviceScaleFactor": 1,
                "mobile": self.mobile,
            }),
        );
    }

    /// A Chrome DevTools Protocol command through chromedriver; its result.
    pub fn cdp(&self, method: &str, params: &Value) -> Value {
        self.command(
            "POST",
            "/goog/cdp/execute",
            Some(&json!({ "cmd": method, "params": params })),
        )
    }

    /// Opens `url` and waits until it has loaded.
    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({ "url": url })));
    }

    /// The URL of the page shown.
    pub fn current_url(&self) -> String {
        string(self.command("GET", "/url", None))
    }

    /// The page's title.
    pub fn title(&self) -> String {
        string(self.command("GET", "/title", None))
    }

    /// Back in the history.
    pub fn back(&self) {
        self.command("POST", "/back", Some(&json!({})));
    }

    /// Reloads the page.
    pub fn refresh(&self) {
        self.command("POST", "/refresh", Some(&json!({})));
    }

    /// The page's DOM, serialised.
    pub fn page_source(&self) -> String {
        string(self.command("GET", "/source", None))
    }

    /// The first element matching the CSS selector; panics when there is none.
    pub fn find(&self, css: &str) -> Element<'_> {
        self.try_find(css)
            .unwrap_or_else(|| panic!("no element matches {css:?} at {}", self.url_or_not()))
    }

    /// The first element matching the CSS selector, if any.
    pub fn try_find(&self, css: &str) -> Option<Element<'_>> {
        self.found(self.try_command("POST", "/element", Some(&by_css(css))))
    }

    /// Every element matching the CSS selector, in document order.
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        self.elements(&self.command("POST", "/elements", Some(&by_css(css))))
    }

    /// The element that has the focus (the body when none has).
    pub fn active(&self) -> Element<'_> {
        self.element(&self.command("GET", "/element/active", None))
    }

    /// Types `text` on the keyboard, into whatever has the focus ([`key`] holds the
    /// special keys).
    pub fn keys(&self, text: &str) {
        let actions: Vec<Value> = text
            .chars()
            .flat_map(|c| {
                [
                    json!({ "type": "keyDown", "value": c.to_string() }),
                    json!({ "type": "keyUp", "value": c.to_string() }),
                ]
            })
            .collect();
        self.key_actions(&actions);
    }

    /// Presses the keys together, as a chord (`press(&[key::SHIFT, key::TAB])`): down in
    /// order, up in reverse.
    pub fn press(&self, chord: &[&str]) {
        let down = chord
            .iter()
            .map(|k| json!({ "type": "keyDown", "value": k }));
        let up = chord
            .iter()
            .rev()
            .map(|k| json!({ "type": "keyUp", "value": k }));
        self.key_actions(&down.chain(up).collect::<Vec<_>>());
    }

    /// Tab: the focus moves to the next element; returns it.
    pub fn tab(&self) -> Element<'_> {
        self.press(&[key::TAB]);
        self.active()
    }

    /// Shift+Tab: the focus moves to the previous element; returns it.
    pub fn shift_tab(&self) -> Element<'_> {
        self.press(&[key::SHIFT, key::TAB]);
        self.active()
    }

    fn key_actions(&self, actions: &[Value]) {
        self.command(
            "POST",
            "/actions",
            Some(&json!({
                "actions": [{ "type": "key", "id": "keyboard", "actions": actions }],
            })),
        );
        self.command("DELETE", "/actions", None);
    }

    /// Runs `js` as the body of a function called with `args` (`arguments[0]`…; an
    /// [`Element::as_arg`] is the element) and returns what it returns. The page's
    /// Content-Security-Policy does not apply to it.
    pub fn execute_script(&self, js: &str, args: &[Value]) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": js, "args": args })),
        )
    }

    /// Every cookie the page can see (HttpOnly ones included).
    pub fn cookies(&self) -> Vec<Cookie> {
        serde_json::from_value(self.command("GET", "/cookie", None))
            .expect("WebDriver GET /cookie: a list of cookies")
    }

    /// The cookie named `name`, if the page has one.
    pub fn cookie(&self, name: &str) -> Option<Cookie> {
        self.cookies().into_iter().find(|c| c.name == name)
    }

    /// Sets a cookie for the page's site (a page of it must be open).
    pub fn add_cookie(&self, cookie: &Cookie) {
        self.command("POST", "/cookie", Some(&json!({ "cookie": cookie })));
    }

    /// Deletes the cookie named `name`.
    pub fn delete_cookie(&self, name: &str) {
        self.command("DELETE", &format!("/cookie/{}", percent_encode(name)), None);
    }

    /// Deletes every cookie the page can see.
    pub fn delete_cookies(&self) {
        self.command("DELETE", "/cookie", None);
    }

    /// The viewport as a PNG.
    pub fn screenshot_png(&self) -> Vec<u8> {
        decode_png(&self.command("GET", "/screenshot", None))
    }

    /// Saves the viewport as a PNG at `path` (its directory created).
    pub fn screenshot(&self, path: &Path) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, self.screenshot_png())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// The browser console's entries since the last call (the session's start at
    /// first): `console.*` calls, uncaught errors, CSP violations.
    pub fn console_log(&self) -> Vec<LogEntry> {
        let entries: Vec<LogEntry> = serde_json::from_value(self.command(
            "POST",
            "/se/log",
            Some(&json!({ "type": "browser" })),
        ))
        .expect("WebDriver POST /se/log: a list of entries");
        self.console.borrow_mut().extend(entries.iter().cloned());
        entries
    }

    /// Waits until an element matches the CSS selector; returns it.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element<'_> {
        self.wait_until(timeout, &format!("an element matching {css:?}"), || {
            self.try_find(css)
        })
    }

    /// Waits until an element matching the CSS selector shows a text containing
    /// `needle`; returns it.
    pub fn wait_text(&self, css: &str, needle: &str, timeout: Duration) -> Element<'_> {
        let mut last = None;
        let found = poll(timeout, || {
            let element = self.try_find(css)?;
            // None when replaced since it was found: look again.
            let text = element.try_text()?;
            let found = text.contains(needle);
            last = Some(text);
            found.then_some(element)
        });
        found.unwrap_or_else(|| {
            self.timed_out(
                timeout,
                &match last {
                    Some(text) => format!("{css:?} to contain {needle:?} (it reads {text:?})"),
                    None => format!("{css:?} to contain {needle:?} (no such element)"),
                },
            )
        })
    }

    /// Waits until no element matches the CSS selector.
    pub fn wait_gone(&self, css: &str, timeout: Duration) {
        self.wait_until(timeout, &format!("no element to match {css:?}"), || {
            self.try_find(css).is_none().then_some(())
        });
    }

    /// Calls `f` every 50 ms until it returns `Some`; panics after `timeout` with
    /// `what` and the page's URL (the drop of the browser then shows the page).
    pub fn wait_until<T>(&self, timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
        poll(timeout, f).unwrap_or_else(|| self.timed_out(timeout, what))
    }

    fn timed_out(&self, timeout: Duration, what: &str) -> ! {
        panic!(
            "timed out after {timeout:?} waiting for {what}, at {}",
            self.url_or_not()
        )
    }

    /// The page's URL for a message, or why there is none.
    fn url_or_not(&self) -> String {
        match self.try_command("GET", "/url", None) {
            Ok(url) => string(url),
            Err(e) => format!("an unknown URL ({e})"),
        }
    }

    /// The page's visible text (`document.body.innerText`), or an empty string.
    pub fn body_text(&self) -> String {
        let script = "return document.body ? document.body.innerText : ''";
        self.try_command(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": [] })),
        )
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
    }

    fn found(&self, reply: Result<Value, WebDriverError>) -> Option<Element<'_>> {
        match reply {
            Ok(value) => Some(self.element(&value)),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("WebDriver: finding an element: {e}"),
        }
    }

    fn element(&self, value: &Value) -> Element<'_> {
        let id = value[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("WebDriver: not an element reference: {value}"));
        Element {
            browser: self,
            id: id.to_owned(),
        }
    }

    fn elements(&self, value: &Value) -> Vec<Element<'_>> {
        value
            .as_array()
            .unwrap_or_else(|| panic!("WebDriver: not a list of elements: {value}"))
            .iter()
            .map(|v| self.element(v))
            .collect()
    }

    /// A command of the session (`tail` after `/session/{id}`); its `value`, or a panic
    /// naming the command and the driver's error.
    fn command(&self, method: &str, tail: &str, body: Option<&Value>) -> Value {
        let shown = body.map(abridged).unwrap_or_default();
        self.try_command(method, tail, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} /session/…{tail} {shown}: {e}"))
    }

    fn try_command(
        &self,
        method: &str,
        tail: &str,
        body: Option<&Value>,
    ) -> Result<Value, WebDriverError> {
        let path = format!("/session/{}{tail}", self.session);
        call(self.port, method, &path, body)
    }

    /// A command outside the session; its `value`, or a panic.
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        call(self.port, method, path, body).unwrap_or_else(|e| {
            panic!(
                "WebDriver {method} {path}: {e}\nchromedriver's log:\n{}",
                self.driver_log()
            )
        })
    }

    /// Keeps what a failed test leaves in the browser: a screenshot, the DOM, the
    /// console and chromedriver's log, in `target/e2e-browser/<test>/`.
    fn keep_evidence(&self) {
        let test = std::thread::current()
            .name()
            .unwrap_or("test")
            .replace("::", "-");
        let dir = evidence_dir().join(test);
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        if let Ok(url) = self.try_command("GET", "/url", None).map(string) {
            eprintln!("===== the browser at the failure: {url} =====");
            eprintln!("{}", self.body_text());
        }
        if let Ok(shot) = self.try_command("GET", "/screenshot", None)
            && let Some(png) = shot.as_str().and_then(|s| BASE64.decode(s).ok())
        {
            let _ = std::fs::write(dir.join("screenshot.png"), png);
        }
        if let Ok(Value::String(source)) = self.try_command("GET", "/source", None) {
            let _ = std::fs::write(dir.join("page.html"), source);
        }
        let mut console = self.console.borrow_mut();
        if let Ok(Ok(rest)) = self
            .try_command("POST", "/se/log", Some(&json!({ "type": "browser" })))
            .map(serde_json::from_value::<Vec<LogEntry>>)
        {
            console.extend(rest);
        }
        let lines: Vec<String> = console
            .iter()
            .map(|e| format!("{} {} {}", e.level, e.source, e.message))
            .collect();
        if !lines.is_empty() {
            eprintln!("===== the browser's console =====\n{}", lines.join("\n"));
        }
        let _ = std::fs::write(dir.join("console.log"), lines.join("\n"));
        let _ = std::fs::write(dir.join("chromedriver.log"), self.driver_log());
        eprintln!(
            "===== screenshot, page, console and chromedriver's log in {} =====",
            dir.display()
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            if std::thread::panicking() {
                self.keep_evidence();
            }
            // Quits Chromium.
            let _ = self.try_command("DELETE", "", None);
        }
        // chromedriver and whatever of Chromium is left: the group started above.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An element of the page shown, as WebDriver refers to it.
#[derive(Clone)]
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

impl fmt::Debug for Element<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Element").field(&self.id).finish()
    }
}

/// The same element of the same document.
impl PartialEq for Element<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Element<'_> {}

impl<'b> Element<'b> {
    /// WebDriver's reference.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The element as an argument of [`Browser::execute_script`].
    pub fn as_arg(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    /// The first descendant matching the CSS selector; panics when there is none.
    pub fn find(&self, css: &str) -> Element<'b> {
        self.try_find(css)
            .unwrap_or_else(|| panic!("no element matches {css:?} inside {self:?}"))
    }

    /// The first descendant matching the CSS selector, if any.
    pub fn try_find(&self, css: &str) -> Option<Element<'b>> {
        self.browser
            .found(self.try_command("POST", "/element", Some(&by_css(css))))
    }

    /// Every descendant matching the CSS selector.
    pub fn find_all(&self, css: &str) -> Vec<Element<'b>> {
        self.browser
            .elements(&self.command("POST", "/elements", Some(&by_css(css))))
    }

    /// The text shown, as rendered (hidden parts left out).
    pub fn text(&self) -> String {
        string(self.command("GET", "/text", None))
    }

    /// The text, or `None` when the element is no longer in the document.
    fn try_text(&self) -> Option<String> {
        match self.try_command("GET", "/text", None) {
            Ok(v) => Some(string(v)),
            Err(e) if e.is_gone() => None,
            Err(e) => panic!("WebDriver: the text of {self:?}: {e}"),
        }
    }

    /// The HTML attribute `name`, if present.
    pub fn attribute(&self, name: &str) -> Option<String> {
        let v = self.command("GET", &format!("/attribute/{}", percent_encode(name)), None);
        v.as_str().map(str::to_owned)
    }

    /// The DOM property `name` (`value`, `checked`, `disabled`…).
    pub fn property(&self, name: &str) -> Value {
        self.command("GET", &format!("/property/{}", percent_encode(name)), None)
    }

    /// The `value` property: what a field holds now.
    pub fn value(&self) -> String {
        string(self.property("value"))
    }

    /// The computed CSS `property` (`display`, `color`…).
    pub fn css_value(&self, property: &str) -> String {
        string(self.command("GET", &format!("/css/{}", percent_encode(property)), None))
    }

    /// The tag name, lower case.
    pub fn tag_name(&self) -> String {
        string(self.command("GET", "/name", None))
    }

    /// Where it is and how big, in CSS pixels from the document's top left.
    pub fn rect(&self) -> Rect {
        serde_json::from_value(self.command("GET", "/rect", None))
            .expect("WebDriver GET /rect: a rectangle")
    }

    /// Whether it is shown.
    pub fn is_displayed(&self) -> bool {
        self.command("GET", "/displayed", None) == true
    }

    /// Whether it is enabled (a form control not disabled).
    pub fn is_enabled(&self) -> bool {
        self.command("GET", "/enabled", None) == true
    }

    /// Whether it is checked or selected.
    pub fn is_selected(&self) -> bool {
        self.command("GET", "/selected", None) == true
    }

    /// Clicks its centre (scrolled into view first); fails when something covers it.
    pub fn click(&self) {
        self.command("POST", "/click", Some(&json!({})));
    }

    /// Focuses it and types `text` ([`key`] holds the special keys).
    pub fn send_keys(&self, text: &str) {
        self.command("POST", "/value", Some(&json!({ "text": text })));
    }

    /// Empties a field.
    pub fn clear(&self) {
        self.command("POST", "/clear", Some(&json!({})));
    }

    fn command(&self, method: &str, tail: &str, body: Option<&Value>) -> Value {
        self.browser
            .command(method, &format!("/element/{}{tail}", self.id), body)
    }

    fn try_command(
        &self,
        method: &str,
        tail: &str,
        body: Option<&Value>,
    ) -> Result<Value, WebDriverError> {
        self.browser
            .try_command(method, &format!("/element/{}{tail}", self.id), body)
    }
}

/// An element's box, in CSS pixels.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Rect {
    /// From the document's left edge.
    pub x: f64,
    /// From the document's top edge.
    pub y: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
}

/// A cookie as WebDriver shows and sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cookie {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
    /// Path (`/` when set without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Domain (the page's host when set without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Sent over HTTPS only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    /// Hidden from the page's scripts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_only: Option<bool>,
    /// Expiry, in seconds since the epoch (a session cookie has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<u64>,
    /// `Strict`, `Lax` or `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<String>,
}

impl Cookie {
    /// A session cookie for the page's site.
    pub fn new(name: &str, value: &str) -> Self {
        Self {
            name: name.to_owned(),
            value: value.to_owned(),
            ..Self::default()
        }
    }
}

/// An entry of the browser's console.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LogEntry {
    /// `SEVERE`, `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    /// Where it comes from and what it says (`javascript 0:75 Uncaught …`).
    pub message: String,
    /// `console-api`, `javascript`, `security`, `network`…
    #[serde(default)]
    pub source: String,
}

/// A WebDriver error reply.
#[derive(Debug)]
struct WebDriverError {
    /// WebDriver's error code (`no such element`, `stale element reference`…), or
    /// `http` when no WebDriver reply came.
    error: String,
    message: String,
}

impl fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

impl WebDriverError {
    /// The element left the document (the page changed between finding it and asking):
    /// WebDriver says `stale element reference`, or chromedriver, when the page is being
    /// replaced at that instant, an `unknown error` from its inspector ("Node with given
    /// id does not belong to the document").
    fn is_gone(&self) -> bool {
        self.error == "stale element reference"
            || (self.error == "unknown error"
                && self.message.contains("does not belong to the document"))
    }

    fn http(message: impl fmt::Display) -> Self {
        Self {
            error: "http".to_owned(),
            message: message.to_string(),
        }
    }
}

/// One WebDriver request to chromedriver on 127.0.0.1: the reply's `value`, or its error.
fn call(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, WebDriverError> {
    let (status, reply) = http(port, method, path, body).map_err(WebDriverError::http)?;
    let reply: Value = serde_json::from_slice(&reply).map_err(|e| {
        WebDriverError::http(format!(
            "HTTP {status}, not JSON ({e}): {}",
            String::from_utf8_lossy(&reply)
        ))
    })?;
    let mut value = reply.get("value").cloned().unwrap_or(Value::Null);
    if status == 200 {
        return Ok(value);
    }
    let error = value["error"]
        .as_str()
        .unwrap_or("unknown error")
        .to_owned();
    let message = match value.get_mut("message").map(Value::take) {
        Some(Value::String(m)) => m,
        _ => format!("HTTP {status}: {reply}"),
    };
    Err(WebDriverError { error, message })
}

/// A plain HTTP/1.1 exchange, one connection each: the status and the body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(COMMAND))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP status line: {line:?}")))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
    }
    let mut reply = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|e| std::io::Error::other(format!("bad chunk size {line:?}: {e}")))?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = length {
        reply.resize(length, 0);
        reader.read_exact(&mut reply)?;
    } else {
        reader.read_to_end(&mut reply)?;
    }
    Ok((status, reply))
}

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn decode_png(value: &Value) -> Vec<u8> {
    let png = value
        .as_str()
        .and_then(|s| BASE64.decode(s).ok())
        .unwrap_or_else(|| panic!("WebDriver GET /screenshot: not base64: {}", abridged(value)));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "WebDriver GET /screenshot: not a PNG"
    );
    png
}

/// `target/e2e-browser/` of the workspace: what failed tests leave, and what tests keep.
pub fn evidence_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is in a workspace")
        .join("target/e2e-browser")
}

/// Calls `f` every [`POLL`] until it returns `Some`, for `timeout` at most.
fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

fn by_css(css: &str) -> Value {
    json!({ "using": "css selector", "value": css })
}

fn string(value: Value) -> String {
    match value {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A request body as a panic shows it: at most 300 characters.
fn abridged(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// `name` as one segment of a URL path.
fn percent_encode(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory of this process's for one browser.
fn scratch_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vigie-browser-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
