//! A real headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`,
//! which `scripts/test` installs): what the console's browser tests and benchmarks share.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// The colour scheme the browser says the system prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Light,
    Dark,
}

/// A chromedriver process and a browser session through it.
pub struct Browser {
    driver: Child,
    pub client: Client,
}

/// A free loopback port.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, `width` × `height` pixels, in a light
    /// system. Fails loudly when either is missing.
    pub async fn start(width: u32, height: u32) -> Browser {
        Browser::start_in(width, height, Scheme::Light).await
    }

    /// The same, in a system that prefers `scheme`.
    pub async fn start_in(width: u32, height: u32, scheme: Scheme) -> Browser {
        for (tool, package) in [
            ("chromedriver", "chromium-driver"),
            ("chromium", "chromium"),
        ] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(
                found,
                "`{tool}` is missing: the console's browser tests need Debian's `{package}` \
                 (./scripts/test installs it; as root: apt-get install -y chromium chromium-driver)"
            );
        }
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--disable-extensions".into(),
            "--enable-precise-memory-info".into(),
            format!("--window-size={width},{height}"),
        ];
        if scheme == Scheme::Dark {
            args.push("--force-dark-mode".into());
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": "/usr/bin/chromium", "args": args }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session through chromedriver");
        Browser { driver, client }
    }

    /// Opens `url` and signs in with `token`; answers once the runs page is shown.
    pub async fn sign_in(&self, base: &str, token: &str) {
        self.client
            .goto(&format!("{base}/login"))
            .await
            .expect("the sign-in page opens");
        let field = self.client.find(Locator::Id("token")).await.unwrap();
        field.send_keys(token).await.unwrap();
        self.click("form.login button").await;
        self.until(
            "the runs page after signing in",
            "return location.pathname === '/runs'",
        )
        .await;
    }

    /// Clicks the element `css` matches; found again if a live refresh replaced it meanwhile.
    pub async fn click(&self, css: &str) {
        let mut tries = 0;
        loop {
            let element = self
                .client
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|err| panic!("no `{css}` on the page: {err}"));
            match element.click().await {
                Ok(()) => return,
                Err(err) if tries < 10 && err.to_string().contains("stale") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("cannot click `{css}`: {err}"),
            }
        }
    }

    /// Runs `script` (a function body) in the page and answers what it returns.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|err| panic!("the script failed: {err}\n{script}"))
    }

    /// Waits until `script` returns true, at most 30 s; `what` says what was awaited.
    pub async fn until(&self, what: &str, script: &str) {
        self.until_within(what, script, Duration::from_secs(30))
            .await;
    }

    pub async fn until_within(&self, what: &str, script: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.client.execute(script, Vec::new()).await.ok() == Some(Value::Bool(true)) {
                return;
            }
            if Instant::now() > deadline {
                let url = self.client.current_url().await.map(|u| u.to_string());
                let text = self
                    .js("return document.body ? document.body.innerText : ''")
                    .await;
                panic!(
                    "waited {limit:?} for {what} (likely stuck) on {url:?}:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a screenshot of the page as `name.png` in [`screenshots`].
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let path = screenshots().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|err| panic!("cannot write {path:?}: {err}"));
    }

    /// Ends the session and chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where the tests keep their screenshots: `target/console-screenshots`.
pub fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("the screenshots folder");
    dir
}
