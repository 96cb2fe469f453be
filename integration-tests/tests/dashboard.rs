//! The admin dashboard in a real headless Chromium, driven through
//! chromedriver (WebDriver): the page shows what `/stats` says of a live
//! broker (a saturated backend's queue, a DOWN server), and its buttons
//! change a server's admin state through the API, token included.
//!
//! The browser tests need Debian's `chromium` and `chromium-driver`
//! (`scripts/test` installs them). Without them they skip with a loud
//! message — unless `CI` is set, where a missing browser fails the test.
//! The page routes themselves are also checked over plain HTTP, browser or not.

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use integration_tests::http::{call, get};
use integration_tests::{Behavior, TestBackend, TestBroker, DEADLINE};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TOKEN: &str = "dashboard-secret";

// === The browser ===

/// Where Chromium and chromedriver are, if both are installed.
struct BrowserInstall {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

/// The installed browser; `None` means "skip this test" (said loudly), and
/// never happens under `CI`, where the test must run.
fn browser_install() -> Option<BrowserInstall> {
    match (on_path("chromium"), on_path("chromedriver")) {
        (Some(chromium), Some(chromedriver)) => Some(BrowserInstall { chromium, chromedriver }),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI is set but chromium or chromedriver is not on PATH: install `chromium chromium-driver` (scripts/test does)")
        }
        _ => {
            // Straight to stderr, not eprintln!: the test harness captures
            // the latter for a passing test, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "\n========================================================================\n\
                 SKIPPED: the dashboard browser test needs `chromium` and `chromedriver`\n\
                 on PATH (Debian: apt-get install chromium chromium-driver, or run\n\
                 scripts/test as root). Under CI=1 this is a failure, not a skip.\n\
                 ========================================================================\n"
            );
            None
        }
    }
}

/// chromedriver and every browser it started, killed together on drop —
/// on every path, a failed assertion included.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    /// Starts chromedriver on a port it picks itself (`--port=0`) and
    /// learns that port from its start line: no port is guessed or reserved.
    fn start(install: &BrowserInstall) -> ChromeDriver {
        let mut command = Command::new(&install.chromedriver);
        command.arg("--port=0").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        // Its own process group, so that drop kills Chromium (chromedriver's
        // child, which outlives a killed chromedriver) along with it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        // Guarded from here on: a panic below still kills it.
        let mut driver = ChromeDriver { child: command.spawn().expect("start chromedriver"), url: String::new() };
        let stdout = driver.child.stdout.take().expect("piped stdout");
        let (port_tx, port_rx) = mpsc::channel();
        // Reads the start line, then keeps draining so chromedriver never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = started_on_port(&line) {
                    let _ = port_tx.send(port);
                }
            }
        });
        let port: u16 = port_rx.recv_timeout(DEADLINE).expect("chromedriver did not say which port it listens on");
        driver.url = format!("http://127.0.0.1:{port}");
        driver
    }

    /// A new headless Chromium session.
    async fn session(&self, install: &BrowserInstall) -> Client {
        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "binary": install.chromium,
                // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000"],
            }
        });
        let serde_json::Value::Object(capabilities) = capabilities else { unreachable!() };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|err| panic!("start headless Chromium through chromedriver at {}: {err}", self.url))
    }
}

/// `ChromeDriver was started successfully on port 42885.` → 42885.
fn started_on_port(line: &str) -> Option<u16> {
    let rest = line.split_once("started successfully on port ")?.1;
    rest.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok()
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The group is the one this test created for chromedriver (its id
        // is chromedriver's pid): it holds chromedriver and its browsers only.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === Reading the page ===

/// Waits (bounded) until the element at `css` shows `expected`; returns how long it took.
async fn wait_text(browser: &Client, css: &str, expected: &str) -> Duration {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < DEADLINE {
        if let Ok(element) = browser.find(Locator::Css(css)).await {
            last = element.text().await.unwrap_or_default();
            if last == expected {
                return start.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the page never showed {expected:?} at {css} within {DEADLINE:?}; last seen: {last:?}");
}

async fn wait_displayed(browser: &Client, css: &str) {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if let Ok(element) = browser.find(Locator::Css(css)).await {
            if element.is_displayed().await.unwrap_or(false) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{css} never became visible within {DEADLINE:?}");
}

/// Waits (bounded) until the app backend's sparkline has `n` samples; returns its points.
async fn wait_samples(browser: &Client, n: usize) -> Vec<(f64, f64)> {
    let script =
        r#"return document.querySelector('[data-backend="app"] svg.sparkline polyline').getAttribute("points");"#;
    let start = Instant::now();
    loop {
        let points = browser.execute(script, vec![]).await.expect("read the sparkline");
        let points: Vec<(f64, f64)> = points
            .as_str()
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.split_once(','))
            .filter_map(|(x, y)| Some((x.parse().ok()?, y.parse().ok()?)))
            .collect();
        if points.len() >= n {
            return points;
        }
        assert!(start.elapsed() < DEADLINE, "the sparkline never had {n} samples: {points:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn server_field(server: &str, field: &str) -> String {
    format!(r#"[data-backend="app"] [data-server="{server}"] [data-field="{field}"]"#)
}

/// Waits (bounded) until `/stats` satisfies `pred`; returns that snapshot.
async fn wait_stats(
    admin: SocketAddr,
    token: Option<&str>,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let reply = get(admin, "/stats", token).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let stats = reply.json();
        if pred(&stats) {
            return stats;
        }
        assert!(start.elapsed() < DEADLINE, "{what} not seen in /stats within {DEADLINE:?}: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn artifact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"), PathBuf::from);
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir.join(name)
}

fn two_servers(s1: SocketAddr, s2: SocketAddr, extra: &str) -> String {
    format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [backends.app.timeout]\nqueue = \"1m\"\n\
         [backends.app.servers.s1]\naddress = \"{s1}\"\nmaxconn = 1\n\
         [backends.app.servers.s2]\naddress = \"{s2}\"\nmaxconn = 1\n{extra}"
    )
}

// === Tests ===

/// A backend whose one live server is full and whose other server is dead:
/// the page shows the clients waiting in queue, the DOWN server and the
/// full server's sessions against its maxconn; a screenshot is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_saturated_backend_and_a_down_server() {
    let Some(install) = browser_install() else { return };
    let s1 = TestBackend::start(Behavior::Echo);
    let mut s2 = TestBackend::start(Behavior::Echo);
    let check = "[backends.app.servers.s2.check]\nenabled = true\ninter = \"100ms\"\nfall = 1\nrise = 2\n";
    let broker = TestBroker::start_with_admin(&two_servers(s1.addr, s2.addr, check));
    let admin = broker.admin_addr.expect("admin API");
    // Chromium starts while the broker is being brought to the state to show.
    let driver = ChromeDriver::start(&install);
    s2.kill().await;
    broker.logs.wait_for("server state changed", |r| r.get("server") == "s2" && r.get("to") == "DOWN").await;

    let seated = integration_tests::seated(broker.addr("web"), b'a').await;
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let mut client = TcpStream::connect(broker.addr("web")).await.expect("connect");
        client.write_all(b"w").await.expect("write");
        waiting.push(client);
    }
    wait_stats(admin, None, "three clients in the backend queue", |s| s["backends"][0]["queue_current"] == 3).await;

    let browser = driver.session(&install).await;
    let started = Instant::now();
    browser.goto(&format!("http://{admin}/")).await.expect("load the dashboard");
    wait_text(&browser, r#"[data-backend="app"] [data-field="waiting"]"#, "3").await;
    wait_text(&browser, &server_field("s2", "status"), "DOWN").await;
    wait_text(&browser, &server_field("s1", "status"), "UP").await;
    wait_text(&browser, &format!("{} .meter-label", server_field("s1", "sessions")), "1 / 1").await;
    println!("dashboard showed the saturated backend {:?} after loading", started.elapsed());
    wait_text(&browser, r#"[data-backend="app"] [data-field="spark-peak"]"#, "3").await;
    // Three samples of queue history (about two seconds), so the
    // screenshot shows the sparkline as a line, not a dot.
    let points = wait_samples(&browser, 3).await;
    assert!(points.iter().all(|&(_, y)| y < 5.0), "every sample at the peak of 3 is drawn at the top: {points:?}");
    let check_text = browser.find(Locator::Css(&server_field("s2", "check"))).await.expect("check cell");
    let check_text = check_text.text().await.expect("text");
    assert!(check_text.starts_with("L4CON"), "s2's failed check is shown: {check_text:?}");
    let status = browser.find(Locator::Css(&server_field("s2", "status"))).await.expect("status badge");
    assert_eq!(
        status.attr("class").await.expect("class").as_deref(),
        Some("badge state-DOWN"),
        "DOWN is coloured as such"
    );

    wait_text(&browser, r#"header [data-field="version"]"#, &format!("version {}", env!("CARGO_PKG_VERSION"))).await;

    // The clients leave: the three that gave up waiting and the seated one
    // (0 ms) are four waits, which the page sums up in plain words.
    drop(waiting);
    drop(seated);
    let stats = wait_stats(admin, None, "four queue waits", |s| s["backends"][0]["queue_wait_ms"]["count"] == 4).await;
    let waits = &stats["backends"][0]["queue_wait_ms"];
    println!("/stats queue_wait_ms: {waits}");
    let card = |field: &str| format!(r#"[data-backend="app"] [data-field="{field}"]"#);
    wait_text(&browser, &card("wait-count"), "4").await;
    for key in ["p50", "p99", "max"] {
        let ms = waits[key].as_u64().unwrap_or_else(|| panic!("{key} in {waits}"));
        wait_text(&browser, &card(&format!("wait-{key}")), &duration_text(ms)).await;
    }
    let sentence = browser.find(Locator::Css(&card("waits-some"))).await.expect("waits").text().await.expect("text");
    println!("the page says: {sentence}");
    assert!(sentence.starts_with("waited in queue (last minute, 4 sessions): half under "), "{sentence}");

    let png = browser.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = artifact("dashboard.png");
    std::fs::write(&path, &png).expect("save the screenshot");
    println!("screenshot: {}", path.display());
    browser.close().await.expect("close the browser");
}

/// The page's way of writing a wait (`durationText` in the page).
fn duration_text(ms: u64) -> String {
    match (ms + 500) / 1000 {
        _ if ms < 10_000 => format!("{ms} ms"),
        s if s < 600 => format!("{s} s"),
        s if s < 36_000 => format!("{} min", (s + 30) / 60),
        s => format!("{} h", (s + 1800) / 3600),
    }
}

/// With `admin.token` set, the page (served without it) asks for the
/// token, then reads `/stats` with it; its drain button drains the server,
/// as the page and `/stats` both show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_button_drains_a_server_with_the_token() {
    let Some(install) = browser_install() else { return };
    let s1 = TestBackend::start(Behavior::Echo);
    let s2 = TestBackend::start(Behavior::Echo);
    let broker =
        TestBroker::start_with_admin(&two_servers(s1.addr, s2.addr, &format!("[admin]\ntoken = \"{TOKEN}\"\n")));
    let admin = broker.admin_addr.expect("admin API");
    let driver = ChromeDriver::start(&install);
    let browser = driver.session(&install).await;
    browser.goto(&format!("http://{admin}/ui")).await.expect("load the dashboard");

    wait_displayed(&browser, "#token-panel").await;
    browser.find(Locator::Css("#token")).await.expect("token field").send_keys(TOKEN).await.expect("type the token");
    browser.find(Locator::Css("#token-submit")).await.expect("token button").click().await.expect("submit");
    wait_text(&browser, &server_field("s1", "status"), "UP").await;

    let drain = browser.find(Locator::Css(r#"[data-server="s1"] button[data-action="drain"]"#)).await.expect("drain");
    let clicked = Instant::now();
    drain.click().await.expect("click drain");
    let shown = wait_text(&browser, &server_field("s1", "status"), "DRAIN").await;
    println!("the page showed DRAIN {:?} after the click", clicked.elapsed().max(shown));
    wait_text(&browser, &server_field("s1", "admin"), "drain").await;
    assert!(!drain.is_enabled().await.expect("enabled?"), "the button of the state in force is disabled");
    let stats =
        wait_stats(admin, Some(TOKEN), "s1 drained", |s| s["backends"][0]["servers"][0]["admin"] == "drain").await;
    assert_eq!(stats["backends"][0]["servers"][0]["status"], "DRAIN");
    assert_eq!(stats["backends"][0]["servers"][1]["admin"], "ready", "only s1 changed");
    broker.logs.wait_for("server admin state changed", |r| r.get("server") == "s1" && r.get("to") == "drain").await;
    browser.close().await.expect("close the browser");
}

/// The page routes over plain HTTP (no browser needed): the page is served
/// at `/` and `/ui` without the token and never contains it; everything
/// else, other methods on the page's paths included, still needs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_without_the_token_and_the_data_is_not() {
    let s1 = TestBackend::start(Behavior::Echo);
    let s2 = TestBackend::start(Behavior::Echo);
    let broker =
        TestBroker::start_with_admin(&two_servers(s1.addr, s2.addr, &format!("[admin]\ntoken = \"{TOKEN}\"\n")));
    let admin = broker.admin_addr.expect("admin API");
    for path in ["/", "/ui"] {
        let page = get(admin, path, None).await;
        assert_eq!(page.status, 200, "{path}: {page:?}");
        assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"), "{path}");
        assert!(page.header("content-security-policy").is_some_and(|p| p.contains("frame-ancestors 'none'")));
        assert!(page.body.contains("<title>usher dashboard</title>"), "{path}");
        assert!(!page.body.contains(TOKEN), "the token is never in the page");
    }
    assert_eq!(get(admin, "/stats", None).await.status, 401, "the data still needs the token");
    let change = call(admin, "PUT", "/", Some(r#"{"state": "drain"}"#), None).await.expect("PUT /");
    assert_eq!(change.status, 401, "only reading the page is open: {change:?}");
    let change = call(admin, "PUT", "/ui", Some("{}"), Some(TOKEN)).await.expect("PUT /ui");
    assert_eq!(change.status, 405, "{change:?}");
    assert_eq!(get(admin, "/ui/", Some(TOKEN)).await.status, 404);
}
