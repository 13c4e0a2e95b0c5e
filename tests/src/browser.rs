//! Headless Chromium for the office's web pages: Debian's `chromedriver` started on a
//! free loopback port, driven over WebDriver with fantoccini, and the helpers the page
//! tests share (sign in, screenshots saved as test artifacts, text of an element, the
//! HTTP status of a page for a browser's session).
//!
//! A missing `chromedriver`, `chromium` or CJK font fails the test with the Debian
//! packages to install ([`APT_PACKAGES`]); it never skips.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use fantoccini::{Client, Locator};

/// The Debian packages the browser tests need (`.ci/run` installs them).
pub const APT_PACKAGES: &str = "chromium chromium-driver fonts-noto-cjk";

/// The Chromium binary chromedriver starts.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The page viewport of the office's screen ([`set_viewport`]).
pub const WINDOW: (u32, u32) = (1366, 768);

/// How long a page may take to show an element the test waits for.
pub const WAIT: Duration = Duration::from_secs(10);

/// Chromium's arguments: headless, no sandbox (tests run as root), no background
/// traffic, the office's window size, Chinese as the browser's language.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1366,768",
    "--lang=zh-CN",
];

/// A `chromedriver` process (in a process group of its own, with the Chromium it
/// starts) and a WebDriver session on it. Dereferences to the fantoccini [`Client`].
///
/// Dropping it kills the whole process group; [`Browser::close`] ends the session
/// first, so that Chromium quits by itself.
#[derive(Debug)]
pub struct Browser {
    client: Option<Client>,
    driver: Child,
    /// Chromium's profile and chromedriver's log, removed on drop.
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:port` of chromedriver.
    pub webdriver: String,
}

fn missing(what: &str) -> ! {
    panic!(
        "{what}: the browser tests need Debian's packages `{APT_PACKAGES}`; install them with \
         `apt-get install -y {APT_PACKAGES}` (.ci/run does)"
    )
}

/// The path of `name` on `PATH`, if any.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Fails the test, naming the packages to install, when chromedriver, Chromium or a
/// font with Chinese characters is missing (a screenshot without one shows boxes).
pub fn check_tools() -> PathBuf {
    let driver = on_path("chromedriver")
        .unwrap_or_else(|| missing("chromedriver is not installed (not on PATH)"));
    if !Path::new(CHROMIUM).exists() {
        missing(&format!(
            "Chromium is not installed ({CHROMIUM} is missing)"
        ));
    }
    let fonts = Command::new("fc-list")
        .arg(":lang=zh")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if fonts.trim().is_empty() {
        missing("no font with Chinese characters is installed (fc-list :lang=zh is empty)");
    }
    driver
}

/// A free TCP port on 127.0.0.1 (free when asked; chromedriver binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Browser {
    /// Starts chromedriver on a free loopback port, waits until it is ready, and opens a
    /// session of headless Chromium (1366×768, zh-CN) with a fresh profile.
    ///
    /// Panics (failing the test) when a tool is missing or the browser does not start.
    pub async fn start() -> Self {
        let driver_bin = check_tools();
        let dir = tempfile::Builder::new()
            .prefix("doorstep-browser")
            .tempdir()
            .expect("browser temp folder");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("chromedriver.log")).expect("log file");
        let mut cmd = Command::new(&driver_bin);
        cmd.arg(format!("--port={port}"))
            // Chromium on Linux takes its interface language (the date and month
            // inputs) from the environment, not from --lang; it has the Chinese only
            // with Debian's chromium-l10n, else those inputs read in English.
            .env("LANGUAGE", "zh_CN")
            .env("LANG", "zh_CN.UTF-8")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // Its own process group: Chromium's processes join it, and drop kills them all.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd.spawn().expect("start chromedriver");
        let webdriver = format!("http://127.0.0.1:{port}");
        let mut browser = Self {
            client: None,
            driver,
            dir,
            webdriver,
        };
        browser.wait_ready();

        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), "chrome".into());
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| s.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser.dir.path().join("profile").display()
        ));
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": CHROMIUM, "args": args }),
        );
        let client = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps)
        .connect(&browser.webdriver)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Chromium did not start under chromedriver: {e}\nchromedriver's log:\n{}",
                browser.driver_log()
            )
        });
        set_viewport(&client, WINDOW.0, WINDOW.1).await;
        browser.client = Some(client);
        browser
    }

    /// Waits (at most 10 s) until chromedriver answers `/status` as ready.
    fn wait_ready(&mut self) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!(
                    "chromedriver exited at start ({status})\n{}",
                    self.driver_log()
                );
            }
            let ready = agent
                .get(format!("{}/status", self.webdriver))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {} within 10 s\n{}",
                self.webdriver,
                self.driver_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What chromedriver wrote so far.
    pub fn driver_log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(self.dir.path().join("chromedriver.log"))
            .and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// The WebDriver client.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the browser session is open")
    }

    /// Ends the WebDriver session (Chromium quits), then chromedriver is killed.
    pub async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = c.close().await;
        }
    }
}

impl std::ops::Deref for Browser {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group by its ID: chromedriver and every Chromium process it started.
        let pgid = self.driver.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A multi-threaded Tokio runtime for a browser test: the WebDriver session runs on
/// it between `block_on` calls, while the test drives simulated phones (blocking code)
/// on its own thread.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The folder screenshots are saved in: `<target>/artifacts/web` (the target folder
/// of this build, or `$CARGO_TARGET_DIR`), created when missing.
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| crate::profile_dir().parent().map(Path::to_path_buf))
        .expect("target folder");
    let dir = target.join("artifacts").join("web");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Sizes the window so that the page's viewport is `width`×`height` CSS pixels (a
/// headless window keeps room for a browser frame, so the window is made larger by its
/// size).
pub async fn set_viewport(client: &Client, width: u32, height: u32) {
    client
        .set_window_size(width, height)
        .await
        .expect("set the window size");
    let inner = client
        .execute("return [window.innerWidth, window.innerHeight];", vec![])
        .await
        .ok()
        .and_then(|v| {
            let a = v.as_array()?;
            Some((a.first()?.as_u64()?, a.get(1)?.as_u64()?))
        });
    let outer = client.get_window_size().await.ok();
    if let (Some((iw, ih)), Some((ow, oh))) = (inner, outer)
        && (iw, ih) != (u64::from(width), u64::from(height))
    {
        let w = u64::from(width) + ow.saturating_sub(iw);
        let h = u64::from(height) + oh.saturating_sub(ih);
        client
            .set_window_size(w as u32, h as u32)
            .await
            .expect("set the window size");
    }
}

/// Saves a screenshot of the whole page at the office's width (the viewport stretched
/// to the page's height, at most 4,000 px, then put back to 1366×768) as
/// `<target>/artifacts/web/<name>.png`; returns its path.
pub async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let height = client
        .execute(
            "return Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0);",
            vec![],
        )
        .await
        .ok()
        .and_then(|v| v.as_u64())
        .unwrap_or(u64::from(WINDOW.1));
    let tall = (height.min(4000) as u32).max(WINDOW.1);
    if tall > WINDOW.1 {
        set_viewport(client, WINDOW.0, tall).await;
    }
    let png = client.screenshot().await.expect("take a screenshot");
    if tall > WINDOW.1 {
        set_viewport(client, WINDOW.0, WINDOW.1).await;
    }
    save(name, &png)
}

/// Saves a screenshot as [`screenshot`] with a phone's viewport (390×844), then puts
/// the office's back.
pub async fn screenshot_phone(client: &Client, name: &str) -> PathBuf {
    set_viewport(client, 390, 844).await;
    let png = client.screenshot().await.expect("take a screenshot");
    set_viewport(client, WINDOW.0, WINDOW.1).await;
    save(name, &png)
}

fn save(name: &str, png: &[u8]) -> PathBuf {
    let path = artifacts_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    eprintln!("screenshot: {}", path.display());
    path
}

/// The current page's URL (for failure messages).
pub async fn url_of(client: &Client) -> String {
    client
        .current_url()
        .await
        .map(|u| u.to_string())
        .unwrap_or_else(|e| format!("(no URL: {e})"))
}

/// The visible text of the whole page.
pub async fn page_text(client: &Client) -> String {
    text_of(client, "body").await
}

/// The visible text of the first element matching the CSS `selector`, waiting up to
/// [`WAIT`] for it to appear.
///
/// Panics, naming the selector, the page's URL and the start of its text, when none
/// appears.
pub async fn text_of(client: &Client, selector: &str) -> String {
    find(client, selector)
        .await
        .text()
        .await
        .unwrap_or_else(|e| panic!("text of {selector}: {e}"))
}

/// The first element matching the CSS `selector`, waiting up to [`WAIT`].
///
/// Panics, naming the selector, the page's URL and the start of its text, when none
/// appears.
pub async fn find(client: &Client, selector: &str) -> fantoccini::elements::Element {
    match client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(selector))
        .await
    {
        Ok(e) => e,
        Err(e) => {
            let url = url_of(client).await;
            let text = match client.find(Locator::Css("body")).await {
                Ok(b) => b.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let text: String = text.chars().take(600).collect();
            panic!("no element `{selector}` on {url} ({e}); the page reads:\n{text}")
        }
    }
}

/// Every element matching `selector` now (no wait).
pub async fn find_all(client: &Client, selector: &str) -> Vec<fantoccini::elements::Element> {
    client
        .find_all(Locator::Css(selector))
        .await
        .unwrap_or_default()
}

/// Types `value` into the field matching `selector`, after clearing it.
pub async fn fill(client: &Client, selector: &str, value: &str) {
    let e = find(client, selector).await;
    e.clear()
        .await
        .unwrap_or_else(|err| panic!("clear {selector}: {err}"));
    e.send_keys(value)
        .await
        .unwrap_or_else(|err| panic!("type into {selector}: {err}"));
}

/// Chooses the option with value `value` in the `<select>` matching `selector`.
pub async fn choose(client: &Client, selector: &str, value: &str) {
    find(client, selector)
        .await
        .select_by_value(value)
        .await
        .unwrap_or_else(|err| panic!("choose {value:?} in {selector}: {err}"));
}

/// Clicks the element matching `selector`.
pub async fn click(client: &Client, selector: &str) {
    find(client, selector)
        .await
        .click()
        .await
        .unwrap_or_else(|err| panic!("click {selector}: {err}"));
}

/// Clicks the element matching `selector` (a submit button) and waits until the page
/// it leads to has loaded (the URL or the document changed, and it is complete).
pub async fn submit(client: &Client, selector: &str) {
    let marker = "__doorstep_before_submit";
    let _ = client
        .execute(&format!("window.{marker} = true;"), vec![])
        .await;
    click(client, selector).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let left = client
            .execute(
                &format!("return !window.{marker} && document.readyState === 'complete';"),
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        if left {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "clicking {selector} on {} led to no new page within {WAIT:?}",
                url_of(client).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens `url` and waits until the page is complete.
pub async fn open(client: &Client, url: &str) {
    client
        .goto(url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
}

/// Signs in on `{base}/login` as `user` with `password` (fields `username` and
/// `password`, the form's submit button), and checks that the browser left the
/// sign-in page.
///
/// Panics with the page's text when the sign-in page stays.
pub async fn sign_in(client: &Client, base: &str, user: &str, password: &str) {
    open(client, &format!("{base}/login")).await;
    fill(client, "input[name=username]", user).await;
    fill(client, "input[name=password]", password).await;
    submit(client, "form button[type=submit], form input[type=submit]").await;
    let url = url_of(client).await;
    if url.contains("/login") {
        let text = page_text(client).await;
        panic!("{user} did not get past the sign-in page ({url}); it reads:\n{text}");
    }
}

/// The web session cookie (`doorstep_session`) the browser holds, if any.
pub async fn session_cookie(client: &Client) -> Option<String> {
    client
        .get_named_cookie("doorstep_session")
        .await
        .ok()
        .map(|c| c.value().to_string())
}

/// Status and `Location` of `GET {base}{path}` sent with the browser's session cookie,
/// without following redirects: what the server answers that browser.
pub fn http_get(base: &str, path: &str, session: Option<&str>) -> (u16, Option<String>, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut req = agent.get(format!("{base}{path}"));
    if let Some(s) = session {
        req = req.header("Cookie", format!("doorstep_session={s}"));
    }
    let mut resp = req.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    (status, location, body)
}

/// Downloads `GET {base}{path}` with the browser's session cookie (a file the page
/// links to: the bulletin's .xlsx, the visits' CSV); fails the test unless it is 200.
pub fn download(base: &str, path: &str, session: &str) -> Vec<u8> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut resp = agent
        .get(format!("{base}{path}"))
        .header("Cookie", format!("doorstep_session={session}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap_or_default();
    assert_eq!(
        status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&body)
            .chars()
            .take(300)
            .collect::<String>()
    );
    body
}
