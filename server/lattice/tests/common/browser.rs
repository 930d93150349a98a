//! A headless Chromium driven through WebDriver, for the dashboard's
//! end-to-end tests: Debian's `chromium` and `chromium-driver` packages
//! (`CHROMEDRIVER` and `CHROMIUM` name other binaries). A test without them
//! fails; it never skips.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use fantoccini::Client as Browser;
use fantoccini::{ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long any one thing may take to show up in the browser.
pub const WAIT: Duration = Duration::from_secs(60);

/// A chromedriver process, killed on drop.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    pub async fn start() -> Driver {
        let program = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&program)
            .arg(format!("--port={port}"))
            // Its own process group, which the browsers it starts join, so
            // that dropping the driver can end them all.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start {program} ({err}): this test needs Debian's chromium and \
                     chromium-driver packages (apt-get install -y chromium chromium-driver)"
                )
            });
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        super::eventually("chromedriver to listen", WAIT, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        driver
    }

    pub async fn browser(&self) -> Browser {
        let mut options = json!({
            "args": [
                "--headless=new",
                // Containers and CI run as root, where Chromium's sandbox
                // cannot start.
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--window-size=1280,1000",
                "--lang=en-US",
            ],
        });
        if let Ok(binary) = std::env::var("CHROMIUM") {
            options["binary"] = json!(binary);
        }
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
            // Confirmation dialogs stay open until the test answers them.
            "unhandledPromptBehavior": "ignore",
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("chromedriver starts a headless Chromium session")
    }
}

impl Drop for Driver {
    /// Kills chromedriver's process group: chromedriver and any browser the
    /// session did not end (the test closes its session first).
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Evaluates `script` (a function body) in the page until it returns
/// something truthy, or panics naming `what` with what the page shows.
pub async fn until(browser: &Browser, what: &str, script: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let value = browser.execute(script, vec![]).await.expect("script runs");
        let truthy = match &value {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            let shown = browser
                .execute("return document.body.innerText", vec![])
                .await
                .unwrap_or_default();
            panic!("the dashboard never showed {what}; it shows:\n{shown}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn text(browser: &Browser, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|err| panic!("no {css} on the page: {err}"))
        .text()
        .await
        .expect("element text")
}

/// Clicks the element `css` finds. The page redraws live parts from events,
/// so an element found may be replaced before the click lands: then it is
/// found again.
pub async fn click(browser: &Browser, css: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let clicked = match browser.find(Locator::Css(css)).await {
            Ok(element) => element.click().await,
            Err(err) => Err(err),
        };
        match clicked {
            Ok(()) => return,
            Err(err)
                if tokio::time::Instant::now() < deadline && err.to_string().contains("stale") =>
            {
                continue
            }
            Err(err) => panic!("cannot click {css}: {err}"),
        }
    }
}
