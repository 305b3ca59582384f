//! A small W3C WebDriver client over plain HTTP to a local `chromedriver` driving headless
//! Debian `chromium`: sessions (desktop or a phone-sized viewport), navigation, scripts,
//! screenshots, the browser console. `Browser::start` returns `None` with a notice when chromium
//! or chromedriver is missing, unless `ACEVISOR_REQUIRE_BROWSER=1`, which makes that a failure.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

pub const REQUIRE_BROWSER_ENV: &str = "ACEVISOR_REQUIRE_BROWSER";

fn browser_required() -> bool {
    std::env::var(REQUIRE_BROWSER_ENV)
        .map(|v| !matches!(v.trim(), "" | "0" | "false" | "no"))
        .unwrap_or(false)
}

/// The first of `names` found on PATH or in /usr/bin, /usr/lib/chromium.
fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .map(PathBuf::from)
        .chain(["/usr/bin", "/usr/lib/chromium"].map(PathBuf::from));
    let dirs: Vec<PathBuf> = dirs.collect();
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

/// A running chromedriver; killed on drop.
pub struct Browser {
    driver: Child,
    /// chromedriver's and chromium's TMPDIR (profiles, shared memory files); removed on drop.
    tmp: PathBuf,
    base: String,
    chromium: PathBuf,
    http: reqwest::Client,
}

impl Drop for Browser {
    /// Asks chromedriver to quit every session's browser (also when the test failed half-way),
    /// then ends it: killing it alone would leave its chromium processes behind.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://").to_string();
        if let Ok(mut conn) = std::net::TcpStream::connect(&addr) {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let request =
                format!("GET /shutdown HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            if conn.write_all(request.as_bytes()).is_ok() {
                let _ = conn.read_to_end(&mut Vec::new());
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.driver.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

impl Browser {
    /// Starts chromedriver on a free loopback port, or `None` (with a notice) when the browser
    /// is not installed and not required.
    pub async fn start() -> Option<Browser> {
        let chromium = find(&["chromium", "chromium-browser"]);
        let driver = find(&["chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            let msg = "headless chromium and chromedriver are not installed \
                       (apt-get install chromium chromium-driver)";
            if browser_required() {
                panic!("{msg}, and {REQUIRE_BROWSER_ENV}=1 requires the browser tests");
            }
            eprintln!("SKIPPED: {msg}; set {REQUIRE_BROWSER_ENV}=1 to make this a failure");
            return None;
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().unwrap().port()
        };
        let tmp =
            std::env::temp_dir().join(format!("acevisor-chromium-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&tmp).expect("a temporary directory for chromium");
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .env("TMPDIR", &tmp)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let b = Browser {
            driver: child,
            tmp,
            base: format!("http://127.0.0.1:{port}"),
            chromium,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = b
                .http
                .get(format!("{}/status", b.base))
                .send()
                .await
                .ok()
                .map(|r| r.json::<Value>());
            if let Some(body) = ready
                && body.await.is_ok_and(|v| v["value"]["ready"] == true)
            {
                return Some(b);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not answer within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new headless session with a `width` x `height` viewport; `phone` emulates a touch
    /// phone of that size (Chrome's windows cannot be narrower than about 500 px).
    pub async fn session(&self, width: u32, height: u32, phone: bool) -> Session {
        let mut options = json!({
            "binary": self.chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--hide-scrollbars", format!("--window-size={width},{height}")],
        });
        if phone {
            options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1.0, "touch": true }
            });
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let r: Value = self
            .http
            .post(format!("{}/session", self.base))
            .json(&caps)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a JSON answer");
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        Session {
            url: format!("{}/session/{id}", self.base),
            http: self.http.clone(),
        }
    }
}

/// One browser session; `close` ends it (the driver's exit ends it too).
pub struct Session {
    url: String,
    http: reqwest::Client,
}

impl Session {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        if let Some(err) = v["value"]["error"].as_str() {
            panic!("WebDriver {path}: {err}: {}", v["value"]["message"]);
        }
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64_decode(b64.as_str().expect("base64 text"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// A screenshot of the whole page (Chrome's full-page capture through the DevTools command).
    pub async fn full_screenshot(&self, path: &Path) {
        let b64 = self
            .call(
                reqwest::Method::POST,
                "/goog/cdp/execute",
                Some(json!({ "cmd": "Page.captureScreenshot",
                    "params": { "captureBeyondViewport": true, "format": "png" } })),
            )
            .await;
        let png = base64_decode(b64["data"].as_str().expect("base64 data"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// The browser console's entries since the last call: `(level, message)`.
    pub async fn console(&self) -> Vec<(String, String)> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({ "type": "browser" })),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["level"].as_str().unwrap_or("").to_string(),
                            e["message"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn close(self) {
        let _ = self.http.delete(&self.url).send().await;
    }
}

/// Standard base64 (with padding) to bytes.
pub fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits: Vec<u32> = s.bytes().filter_map(val).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, d)| acc | (d << (18 - 6 * i)));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}

/// Where a test run keeps its artefacts: `ACEVISOR_ARTIFACTS`, else `target/test-artifacts`.
pub fn artifacts_dir() -> PathBuf {
    std::env::var_os("ACEVISOR_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts"))
}

#[test]
fn base64_decodes_padded_and_unpadded() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8h"), b"hello!");
    assert_eq!(base64_decode("aGk="), b"hi");
}
