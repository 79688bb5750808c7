//! The web page in a real browser: Debian's `chromedriver` (package `chromium-driver`) drives
//! headless Chromium (`/usr/bin/chromium`) over WebDriver, through `fantoccini`.
//!
//! [`Browser::start`] starts a chromedriver of its own on a free loopback port (a child
//! process, killed with its browsers when the [`Browser`] is dropped), waits until it
//! answers `/status`, and opens a session with a fresh profile. At most
//! `TASKER_UI_BROWSERS` (default 2) browsers exist at once in a test process, whatever
//! `--test-threads` says: the CI machine has 2 busy cores.
//!
//! Every wait polls with a generous bound ([`WAIT`]) and, when it runs out, saves a
//! screenshot `target/ui-screenshots/failed-<test>.png` and prints the console before it
//! fails. [`Browser::assert_no_console_errors`] reads the console (everything it logged
//! since the session began) and fails on any `SEVERE` entry that the test did not expect.
//!
//! [`listening`] starts `tasker serve` or `tasker dev` on a free port and reads the URL it
//! prints; [`Api`] is a small client of its JSON API, for the set-up a test does outside the
//! page.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fantoccini::actions::{
    Actions, InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction, WheelAction, WheelActions,
};
use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cli::root;

use crate::served::POLL;
pub use crate::served::{Api, WAIT, listening};

/// The Chromium binary (`TASKER_CHROMIUM` overrides it).
fn chromium() -> String {
    std::env::var("TASKER_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// The chromedriver binary (`TASKER_CHROMEDRIVER` overrides it).
fn chromedriver() -> String {
    std::env::var("TASKER_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into())
}

/// Browsers allowed at once in this process.
fn permits() -> Arc<Semaphore> {
    static P: OnceLock<Arc<Semaphore>> = OnceLock::new();
    P.get_or_init(|| {
        let n = std::env::var("TASKER_UI_BROWSERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n: &usize| *n > 0)
            .unwrap_or(2);
        Arc::new(Semaphore::new(n))
    })
    .clone()
}

/// Where screenshots go: `<workspace>/target/ui-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    let d = root().join("target/ui-screenshots");
    std::fs::create_dir_all(&d).expect("target/ui-screenshots can be created");
    d
}

/// A free loopback port (it may be taken again before it is used: callers retry).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A chromedriver child process in a process group of its own, so that the browsers it
/// started go with it.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    async fn start() -> Driver {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let log = root().join(format!("target/tmp/chromedriver-{port}.log"));
            let _ = std::fs::create_dir_all(log.parent().unwrap());
            let mut c = Command::new(chromedriver());
            c.arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            std::os::unix::process::CommandExt::process_group(&mut c, 0);
            let child = c.spawn().unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (Debian: apt-get install chromium chromium-driver; \
                     scripts/test.sh installs them)",
                    chromedriver()
                )
            });
            let mut driver = Driver { child, port };
            match driver.ready().await {
                Ok(()) => return driver,
                Err(e) => last = e,
            }
        }
        panic!("chromedriver did not start: {last}");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Polls `/status` until it says ready.
    async fn ready(&mut self) -> Result<(), String> {
        let http = reqwest::Client::new();
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("chromedriver exited: {status}"));
            }
            if let Ok(res) = http
                .get(format!("{}status", self.url()))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                && let Ok(v) = res.json::<Value>().await
                && v["value"]["ready"] == true
            {
                return Ok(());
            }
            if t.elapsed() > WAIT {
                return Err(format!("no answer on port {} after {WAIT:?}", self.port));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A blocking request to chromedriver, for `Drop` (no runtime to await on there).
    fn blocking(&self, method: &str, path: &str) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let _ = write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // The whole group: chromedriver and the Chromium processes it started.
            // SAFETY: kill(2) on the process group this Driver created; no memory involved.
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `POST /session/{id}/se/log {"type": "browser"}`: the console entries since the last read.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or("")))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}

/// `POST /session/{id}/goog/cdp/execute`: a DevTools protocol command through chromedriver.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or("")
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params});
        (http::Method::POST, Some(body.to_string()))
    }
}

/// One entry of the browser's console log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// `SEVERE`, `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    /// `console-api`, `network`, `javascript`, ...
    pub source: String,
    pub message: String,
}

impl std::fmt::Display for LogEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} {}] {}", self.level, self.source, self.message)
    }
}

/// A headless Chromium session.
pub struct Browser {
    client: Client,
    session: String,
    /// The test's name: failure screenshots are named after it.
    name: String,
    console: Mutex<Vec<LogEntry>>,
    closed: bool,
    // Dropped in this order: the session (in `Drop`), the driver, the profile, the permit.
    driver: Driver,
    _profile: tempfile::TempDir,
    _permit: OwnedSemaphorePermit,
}

impl Browser {
    /// A new browser (its own chromedriver, a fresh profile), once a permit is free.
    pub async fn start(name: &str) -> Browser {
        let permit = permits()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let tmp = root().join("target/tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let profile = tempfile::Builder::new()
            .prefix("chromium-profile-")
            .tempdir_in(&tmp)
            .expect("a profile directory");
        // A failure screenshot of an earlier run of this test would mislead.
        let _ = std::fs::remove_file(screenshot_dir().join(format!("failed-{name}.png")));
        let driver = Driver::start().await;
        let caps = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {
                "binary": chromium(),
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1400,900",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--metrics-recording-only",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let caps = caps.as_object().unwrap().clone();
        let mut last = None;
        let mut client = None;
        // A session on a busy machine can fail to start once (Chromium too slow to
        // answer chromedriver); a second try is cheap.
        for _ in 0..2 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&driver.url())
                .await
            {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(e) => last = Some(e.to_string()),
            }
        }
        let client = client.unwrap_or_else(|| {
            panic!(
                "no WebDriver session with {}: {}",
                chromium(),
                last.unwrap_or_default()
            )
        });
        let session = client
            .session_id()
            .await
            .expect("the session id")
            .expect("a session");
        Browser {
            client,
            session,
            name: name.to_owned(),
            console: Mutex::new(Vec::new()),
            closed: false,
            driver,
            _profile: profile,
            _permit: permit,
        }
    }

    /// The fantoccini client, for what these helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs `script` in every document this session loads from now on, before the page's
    /// own scripts (DevTools' `Page.addScriptToEvaluateOnNewDocument`): e.g. an observer
    /// that timestamps the first render.
    pub async fn on_new_document(&self, script: &str) {
        if let Err(e) = self
            .client
            .issue_cmd(Cdp {
                cmd: "Page.addScriptToEvaluateOnNewDocument",
                params: json!({ "source": script }),
            })
            .await
        {
            panic!("Page.addScriptToEvaluateOnNewDocument: {e}");
        }
    }

    /// Navigates to `url` and waits for the load event.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("navigating to {url}: {e}"));
    }

    /// Reloads the page.
    pub async fn reload(&self) {
        self.client.refresh().await.expect("the page reloads");
    }

    /// The page's URL.
    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("the current URL")
            .to_string()
    }

    /// Runs `script` (a function body: `return ...`; a returned promise is awaited) with
    /// `arguments`.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        match self.client.execute(script, args).await {
            Ok(v) => v,
            Err(e) => {
                self.fail(&format!("the script {script:?}"), Some(e.to_string()))
                    .await
            }
        }
    }

    /// Polls `script` until it returns something truthy (not null, false, 0, "" or
    /// undefined), which it returns; fails the test after [`WAIT`] naming `what`.
    pub async fn wait_js(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let t = Instant::now();
        let mut last;
        loop {
            match self.client.execute(script, args.clone()).await {
                Ok(v) if truthy(&v) => return v,
                Ok(v) => last = format!("last returned {v}"),
                Err(e) => last = format!("last failed: {e}"),
            }
            if t.elapsed() > WAIT {
                self.fail(&format!("waiting {WAIT:?} for {what}"), Some(last))
                    .await
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until an element matches `css`, and returns the first.
    pub async fn wait_for(&self, css: &str) -> Element {
        self.wait_js(
            &format!("an element {css}"),
            "return document.querySelector(arguments[0]) !== null",
            vec![json!(css)],
        )
        .await;
        self.find(css).await
    }

    /// The first element matching `css`, now.
    pub async fn find(&self, css: &str) -> Element {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e,
            Err(e) => {
                self.fail(&format!("finding {css}"), Some(e.to_string()))
                    .await
            }
        }
    }

    /// How many elements match `css`, now.
    pub async fn count(&self, css: &str) -> usize {
        self.js(
            "return document.querySelectorAll(arguments[0]).length",
            vec![json!(css)],
        )
        .await
        .as_u64()
        .unwrap_or(0) as usize
    }

    /// An attribute of the first element matching `css` (None: no element, or no such
    /// attribute).
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.js(
            "const e = document.querySelector(arguments[0]); \
             return e ? e.getAttribute(arguments[1]) : null",
            vec![json!(css), json!(name)],
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    /// The text of the first element matching `css` ("" when there is none).
    pub async fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''",
            vec![json!(css)],
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits until the first element matching `css` has `name="value"`.
    pub async fn wait_attr(&self, css: &str, name: &str, value: &str) {
        self.wait_js(
            &format!("{css} with {name}={value:?}"),
            "const e = document.querySelector(arguments[0]); \
             return e !== null && e.getAttribute(arguments[1]) === arguments[2]",
            vec![json!(css), json!(name), json!(value)],
        )
        .await;
    }

    /// Waits until the page `page` (its `body[data-page]`) has drawn its first data.
    pub async fn wait_page(&self, page: &str) {
        self.wait_js(
            &format!("the {page} page to be ready (body[data-page={page:?}][data-ready=\"1\"])"),
            "return document.body !== null && document.body.dataset.page === arguments[0] \
             && document.body.dataset.ready === '1'",
            vec![json!(page)],
        )
        .await;
    }

    /// Waits until an element matching `css` is displayed and enabled, then clicks it the
    /// way a person would (WebDriver's element click: scrolled into view, hit-tested).
    pub async fn click(&self, css: &str) {
        self.wait_js(
            &format!("{css} to be visible and enabled"),
            "const e = document.querySelector(arguments[0]); \
             if (e === null || e.disabled) return false; \
             const r = e.getBoundingClientRect(); \
             return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== 'hidden'",
            vec![json!(css)],
        )
        .await;
        let e = self.find(css).await;
        if let Err(err) = e.click().await {
            self.fail(&format!("clicking {css}"), Some(err.to_string()))
                .await
        }
    }

    /// Types `text` into the element matching `css` (cleared first).
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.wait_for(css).await;
        let _ = e.clear().await;
        if let Err(err) = e.send_keys(text).await {
            self.fail(&format!("typing into {css}"), Some(err.to_string()))
                .await
        }
    }

    /// Confirms the open `dialog#confirm` (waits for it to open first).
    pub async fn confirm(&self, yes: bool) {
        self.wait_js(
            "dialog#confirm to open",
            "const d = document.querySelector('dialog#confirm'); return d !== null && d.open",
            vec![],
        )
        .await;
        let button = if yes { "yes" } else { "no" };
        self.click(&format!("dialog#confirm button[data-confirm=\"{button}\"]"))
            .await;
        self.wait_js(
            "dialog#confirm to close",
            "const d = document.querySelector('dialog#confirm'); return d === null || !d.open",
            vec![],
        )
        .await;
    }

    /// Turns the mouse wheel by `delta_y` pixels over the viewport point (x, y).
    pub async fn wheel(&self, x: f64, y: f64, delta_y: i64) {
        let mut wheel = WheelActions::new("wheel".into());
        wheel.push(WheelAction::Scroll {
            duration: Some(Duration::from_millis(100)),
            x: x as i64,
            y: y as i64,
            delta_x: 0,
            delta_y,
        });
        self.client
            .perform_actions(Actions::from(wheel))
            .await
            .expect("a wheel action");
        let _ = self.client.release_actions().await;
    }

    /// Drags with the left button from the viewport point (x, y) by (dx, dy).
    pub async fn drag(&self, x: f64, y: f64, dx: f64, dy: f64) {
        let mouse = MouseActions::new("mouse".into())
            .then(PointerAction::MoveTo {
                duration: None,
                x,
                y,
            })
            .then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::MoveBy {
                duration: Some(Duration::from_millis(150)),
                x: dx / 2.0,
                y: dy / 2.0,
            })
            .then(PointerAction::MoveBy {
                duration: Some(Duration::from_millis(150)),
                x: dx / 2.0,
                y: dy / 2.0,
            })
            .then(PointerAction::Up {
                button: MOUSE_BUTTON_LEFT,
            });
        self.client
            .perform_actions(Actions::from(mouse))
            .await
            .expect("a drag");
        let _ = self.client.release_actions().await;
    }

    /// Saves a screenshot of the window as `target/ui-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("a screenshot: {e}"));
        let path = screenshot_dir().join(format!("{name}.png"));
        let tmp = path.with_extension(format!("png.{}.tmp", std::process::id()));
        std::fs::write(&tmp, &png).expect("the screenshot is written");
        std::fs::rename(&tmp, &path).expect("the screenshot is in place");
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Saves a screenshot of the whole page (up to 4,000 px high), not only the window: the
    /// window grows to the page's height for the shot, then goes back to 1400x900.
    pub async fn screenshot_page(&self, name: &str) -> PathBuf {
        let size = self
            .js(
                "return [document.documentElement.scrollHeight,
                         window.outerHeight - window.innerHeight]",
                vec![],
            )
            .await;
        let height = size[0].as_u64().unwrap_or(900).min(4000) + size[1].as_u64().unwrap_or(0);
        let grow = height > 900;
        if grow {
            let _ = self.client.set_window_size(1400, height as u32).await;
            // Two frames: the page lays out again at the new size before the shot.
            let _ = self
                .client
                .execute(
                    "return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))",
                    vec![],
                )
                .await;
        }
        let path = self.screenshot(name).await;
        if grow {
            let _ = self.client.set_window_size(1400, 900).await;
        }
        path
    }

    /// Everything the console logged since the session began.
    pub async fn console(&self) -> Vec<LogEntry> {
        let fresh = match self.client.issue_cmd(BrowserLog).await {
            Ok(Value::Array(entries)) => entries,
            Ok(other) => panic!("the browser log is not a list: {other}"),
            Err(e) => panic!("reading the browser log: {e}"),
        };
        let mut all = self.console.lock().unwrap();
        all.extend(fresh.iter().map(|e| LogEntry {
            level: e["level"].as_str().unwrap_or_default().to_owned(),
            source: e["source"].as_str().unwrap_or_default().to_owned(),
            message: e["message"].as_str().unwrap_or_default().to_owned(),
        }));
        all.clone()
    }

    /// Fails the test if the console holds an error (`SEVERE`) other than those whose
    /// message contains one of `expected` (e.g. the 403 of a forged request the test sent on
    /// purpose). Prints every entry.
    pub async fn assert_no_console_errors(&self, expected: &[&str]) {
        let all = self.console().await;
        for e in &all {
            eprintln!("console: {e}");
        }
        let errors: Vec<&LogEntry> = all
            .iter()
            .filter(|e| e.level == "SEVERE")
            .filter(|e| !expected.iter().any(|x| e.message.contains(x)))
            .collect();
        if !errors.is_empty() {
            let _ = self.try_screenshot(&format!("failed-{}", self.name)).await;
        }
        assert!(
            errors.is_empty(),
            "{}: the page logged {} console error(s):\n{}",
            self.name,
            errors.len(),
            errors
                .iter()
                .map(|e| format!("  {e}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    async fn try_screenshot(&self, name: &str) -> Option<PathBuf> {
        let png = self.client.screenshot().await.ok()?;
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).ok()?;
        Some(path)
    }

    /// Fails the test: a screenshot, the page's URL, state and console, then a panic.
    pub async fn fail(&self, what: &str, detail: Option<String>) -> ! {
        let shot = self
            .try_screenshot(&format!("failed-{}", self.name))
            .await
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none".into());
        let url = self
            .client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        let state = self
            .client
            .execute(
                "const b = document.body; const err = document.querySelector('#error'); \
                 return {page: b && b.dataset.page, ready: b && b.dataset.ready, \
                         error: err && err.textContent, \
                         text: b && b.innerText.slice(0, 2000)}",
                vec![],
            )
            .await
            .map(|v| v.to_string())
            .unwrap_or_default();
        let console = match self.client.issue_cmd(BrowserLog).await {
            Ok(v) => v.to_string(),
            Err(e) => e.to_string(),
        };
        panic!(
            "{}: {what}{}\n  url: {url}\n  page: {state}\n  console (since the last read): \
             {console}\n  screenshot: {shot}",
            self.name,
            detail.map(|d| format!(": {d}")).unwrap_or_default()
        );
    }

    /// Ends the session (Chromium quits) and stops chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.closed = true;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.closed {
            // A failed test: end the session the blocking way, so Chromium quits cleanly.
            self.driver
                .blocking("DELETE", &format!("/session/{}", self.session));
        }
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// A wide, layered template of `steps` steps (`s0000`, `s0001`, ...), `width` per layer:
/// each step after the first layer depends on one or two steps of the layer before. Every
/// step runs `handler`.
pub fn layered_template(name: &str, steps: usize, width: usize, handler: &str) -> String {
    let mut y = format!(
        "namespace: ui\nname: {name}\nversion: 1.0.0\ndescription: {steps} steps, {width} per layer.\nsteps:\n"
    );
    for i in 0..steps {
        let (layer, at) = (i / width, i % width);
        if layer == 0 {
            y.push_str(&format!("  - {{ name: s{i:04}, handler: {handler} }}\n"));
            continue;
        }
        let above = (layer - 1) * width;
        let mut parents = vec![above + at];
        let other = above + (at * 7 + 3) % width;
        if other != parents[0] {
            parents.push(other);
        }
        let parents: Vec<String> = parents.iter().map(|p| format!("s{p:04}")).collect();
        y.push_str(&format!(
            "  - {{ name: s{i:04}, handler: {handler}, depends_on: [{}] }}\n",
            parents.join(", ")
        ));
    }
    y
}

/// The number of edges of [`layered_template`].
pub fn layered_edges(steps: usize, width: usize) -> usize {
    (width..steps)
        .map(|i| {
            let at = i % width;
            if (at * 7 + 3) % width == at { 1 } else { 2 }
        })
        .sum()
}
