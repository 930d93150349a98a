//! The web dashboard end to end: a real headless Chromium, driven through
//! WebDriver (chromedriver), against a real `lattice up` on the Docker
//! engine. It creates an app with `ltc`, sees its instance appear on the
//! cluster page, scales it from the app page (with the keyboard) and sees
//! the count follow, sees a live router log line, kills a container and
//! sees the crash, sees an instance no cell can hold reported as not
//! placed, cancels and deletes tasks, and removes the app. Each page's
//! screenshot is written to `ui-*.png` in cargo's test temp dir, and into
//! `docs/img/` (the README's pictures) with `LATTICE_UPDATE_SCREENSHOTS=1`:
//! a plain test run leaves the work tree as it was.
//!
//! # Needs
//! Debian's `chromium` and `chromium-driver` packages (the test fails, never
//! skips, without them):
//!
//! ```sh
//! command -v chromedriver >/dev/null || \
//!   (apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver)
//! ```
//!
//! `CHROMEDRIVER` names another chromedriver binary; `CHROMIUM` another
//! browser binary.

mod common;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use common::browser::{click, text, until, Browser, Driver};
use common::Cluster;
use fantoccini::Locator;
use futures::FutureExt;
use lattice_models::{DesiredLrpCreateRequest, TaskCreateRequest};
use serde_json::json;

/// The whole test; CI has two cores shared with other tests.
const WHOLE_TEST: Duration = Duration::from_secs(300);
const USER: (&str, &str) = ("admin", "dashboard-secret");

/// Follows a link the way a user would, then waits for the page it names.
async fn go(browser: &Browser, hash: &str, heading: &str) {
    click(browser, &format!("header nav a[href='{hash}']")).await;
    until(
        browser,
        &format!("the {heading} page"),
        &format!("return document.querySelector('main h1')?.textContent === '{heading}'"),
    )
    .await;
}

/// Usable on a phone-sized window: the page itself never scrolls sideways
/// (wide tables scroll inside their own box).
async fn fits_a_narrow_window(browser: &Browser, page: &str) {
    browser.set_window_size(400, 900).await.expect("resize");
    let fits = browser
        .execute(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth",
            vec![],
        )
        .await
        .expect("script runs");
    browser.set_window_size(1280, 1000).await.expect("resize");
    assert_eq!(
        fits,
        json!(true),
        "the {page} page overflows a 400 px window"
    );
}

async fn screenshot(browser: &Browser, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    let dir = if std::env::var_os("LATTICE_UPDATE_SCREENSHOTS").is_some() {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/img")
    } else {
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots")
    };
    std::fs::create_dir_all(&dir).expect("a screenshot dir");
    std::fs::write(dir.join(format!("ui-{name}.png")), png).expect("write screenshot");
}

async fn too_big_app() -> DesiredLrpCreateRequest {
    serde_json::from_value(json!({
        "process_guid": "too-big",
        "domain": "lattice",
        "rootfs": lattice_testkit::images::busybox_image().await,
        "instances": 1,
        "memory_mb": 1_000_000,
        "action": {"run": {"path": "/bin/sleep", "args": ["300"]}},
    }))
    .expect("valid request")
}

async fn task(guid: &str, script: &str) -> TaskCreateRequest {
    serde_json::from_value(json!({
        "task_guid": guid,
        "domain": "ui-test",
        "rootfs": lattice_testkit::images::busybox_image().await,
        "memory_mb": 16,
        "action": {"run": {"path": "/bin/sh", "args": ["-c", script]}},
    }))
    .expect("valid request")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_cluster_live() {
    // Built or imported once per machine, outside the time bound.
    common::lifecycle_dir();
    lattice_testkit::images::docker_app_image().await;
    lattice_testkit::images::busybox_image().await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    let outcome = AssertUnwindSafe(tokio::time::timeout(WHOLE_TEST, dashboard_flow(&browser)))
        .catch_unwind()
        .await;
    // Ended whatever happened: a browser left running outlives the test.
    let _ = browser.close().await;
    drop(driver);
    match outcome {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(Err(_)) => panic!("the dashboard test did not finish within {WHOLE_TEST:?}"),
        Ok(Ok(())) => {}
    }
}

async fn dashboard_flow(browser: &Browser) {
    let cluster = Cluster::start_with(common::ClusterOptions {
        credentials: Some(lattice_receptor::Credentials {
            username: USER.0.into(),
            password: USER.1.into(),
        }),
        ..Default::default()
    })
    .await;
    let address = cluster.base.trim_start_matches("http://").to_string();

    // Behind the API's credentials: a browser is asked for them.
    let anonymous = reqwest::get(format!("{}/ui", cluster.base)).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(
        anonymous.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic"),
        "{:?}",
        anonymous.headers()
    );

    browser
        .goto(&format!(
            "http://{}:{}@{address}/ui#/cluster",
            USER.0, USER.1
        ))
        .await
        .expect("open the dashboard");
    until(
        browser,
        "the cell and a live event stream",
        &format!(
            "return document.querySelector('[data-cell=\"{}\"]') && \
             document.getElementById('connection').textContent === 'live'",
            cluster.cell_id
        ),
    )
    .await;

    // Created with ltc while the page is open: its instance appears live.
    let credentials = Some(lattice_client::Credentials::new(USER.0, USER.1));
    let (code, out, err) = common::run_ltc(
        &cluster.base,
        credentials,
        &["create", "web", "lattice-test/docker-app:v1", "-m", "64"],
    )
    .await;
    assert_eq!(code, 0, "ltc create: {out}{err}");
    until(
        browser,
        "web's running instance on the cell",
        &format!(
            "return document.querySelectorAll('[data-cell=\"{}\"] .dot[data-app=\"web\"][data-state=\"RUNNING\"]').length === 1",
            cluster.cell_id
        ),
    )
    .await;

    // An instance no cell can hold is shown as not placed, with the reason.
    cluster
        .client
        .create_desired_lrp(&too_big_app().await)
        .await
        .expect("create too-big");
    until(
        browser,
        "too-big as not placed with its placement error",
        "return document.querySelector('.cell.unplaced .dot[data-app=\"too-big\"]') && \
         document.querySelector('.cell.unplaced .placement-error')?.textContent",
    )
    .await;

    // The app page, reached from its dot; scaled with the keyboard only.
    click(browser, ".dot[data-app='web']").await;
    until(
        browser,
        "web's app page with 1/1 running",
        "return document.getElementById('running-count')?.textContent === '1/1'",
    )
    .await;
    let input = browser
        .find(Locator::Id("scale-input"))
        .await
        .expect("scale input");
    // Ctrl+A selects what the field holds, typing replaces it, Enter
    // submits (WebDriver's clear() would blur the field, and the page keeps
    // an unfocused field in step with the desired count).
    input
        .send_keys("\u{E009}a\u{E000}3\u{E007}")
        .await
        .expect("select all, type 3, Enter");
    until(
        browser,
        "3/3 instances of web running",
        "return document.getElementById('running-count').textContent === '3/3' && \
         document.querySelectorAll('#instances-table tr[data-state=\"RUNNING\"]').length === 3",
    )
    .await;

    // A request through the router: its access line arrives in the log tail.
    let router = reqwest::Client::new()
        .get(format!("http://{}/", cluster.router))
        .header("host", "web.localhost")
        .send()
        .await
        .expect("router answers");
    assert_eq!(router.status(), 200);
    until(
        browser,
        "a live RTR line in web's log tail",
        "return document.querySelector('#log .line[data-source=\"RTR\"]')",
    )
    .await;
    // The source filter hides and shows lines without reconnecting.
    click(browser, "#source-RTR").await;
    until(
        browser,
        "the RTR lines hidden",
        "return !document.querySelector('#log .line[data-source=\"RTR\"]')",
    )
    .await;
    click(browser, "#source-RTR").await;
    until(
        browser,
        "the RTR lines back",
        "return document.querySelector('#log .line[data-source=\"RTR\"]')",
    )
    .await;

    // A container killed behind the cluster's back: the crash is shown.
    let victim = cluster
        .client
        .actual_lrp("web", 1)
        .await
        .expect("instance 1");
    common::kill_instance_container(&victim.instance_guid).await;
    let reason = until(
        browser,
        "instance 1's crash count and reason",
        "const row = document.querySelector('#instances-table tr[data-index=\"1\"]'); \
         return row && row.querySelector('[data-col=crashes]').textContent === '1' && \
           row.querySelector('[data-col=reason]').textContent !== '–' && \
           row.querySelector('[data-col=reason]').textContent",
    )
    .await;
    eprintln!("crash reason shown: {reason}");
    until(
        browser,
        "3/3 running again after the crash",
        "return document.getElementById('running-count').textContent === '3/3'",
    )
    .await;
    screenshot(browser, "app").await;

    go(browser, "#/cluster", "Cluster").await;
    until(
        browser,
        "web's three running instances on the cluster page",
        "return document.querySelectorAll('.dot[data-app=\"web\"][data-state=\"RUNNING\"]').length === 3",
    )
    .await;
    screenshot(browser, "cluster").await;
    fits_a_narrow_window(browser, "cluster").await;

    // Apps: counts, crashes, sorting.
    go(browser, "#/apps", "Apps").await;
    until(
        browser,
        "web at 3/3 with one crash and too-big at 0/1",
        "const web = document.querySelector('tr[data-app=\"web\"]'); \
         const big = document.querySelector('tr[data-app=\"too-big\"]'); \
         return web && big && \
           web.querySelector('[data-col=instances]').textContent === '3/3' && \
           web.querySelector('[data-col=crashes]').textContent === '1' && \
           big.querySelector('[data-col=instances]').textContent.startsWith('0/1')",
    )
    .await;
    let order = "return [...document.querySelectorAll('#apps-table tbody tr')].map(r => r.dataset.app).join(',')";
    assert_eq!(until(browser, "the apps", order).await, "too-big,web");
    click(browser, "button[data-sort='crashes']").await;
    click(browser, "button[data-sort='crashes']").await;
    assert_eq!(until(browser, "the apps", order).await, "web,too-big");
    assert_eq!(
        browser
            .find(Locator::Css("th[aria-sort='descending'] button"))
            .await
            .expect("a descending column")
            .text()
            .await
            .unwrap(),
        "Crashes"
    );
    screenshot(browser, "apps").await;
    fits_a_narrow_window(browser, "apps").await;

    // Tasks: a failure with its reason, a cancel and a delete.
    cluster
        .client
        .create_task(&task("fails", "echo oops; exit 3").await)
        .await
        .expect("create task");
    cluster
        .client
        .create_task(&task("sleeper", "sleep 300").await)
        .await
        .expect("create task");
    go(browser, "#/tasks", "Tasks").await;
    until(
        browser,
        "the failed task with its reason and the running one",
        "const fails = document.querySelector('tr[data-task=\"fails\"]'); \
         const sleeper = document.querySelector('tr[data-task=\"sleeper\"]'); \
         return fails && sleeper && fails.dataset.state === 'COMPLETED' && \
           sleeper.dataset.state === 'RUNNING' && \
           fails.querySelector('[data-col=reason]').textContent !== '–'",
    )
    .await;
    click(browser, "tr[data-task='sleeper'] button").await;
    until(
        browser,
        "the cancelled task completed as failed",
        "const row = document.querySelector('tr[data-task=\"sleeper\"]'); \
         return row.dataset.state === 'COMPLETED' && \
           row.querySelector('[data-col=reason]').textContent",
    )
    .await;
    screenshot(browser, "tasks").await;
    click(browser, "tr[data-task='fails'] button").await;
    let question = browser.get_alert_text().await.expect("a confirmation");
    assert!(question.contains("fails"), "{question}");
    browser.accept_alert().await.expect("confirm");
    until(
        browser,
        "the deleted task gone",
        "return !document.querySelector('tr[data-task=\"fails\"]')",
    )
    .await;

    // Remove, confirmed, from the app page.
    go(browser, "#/apps", "Apps").await;
    click(browser, "a[data-key='app-web']").await;
    until(
        browser,
        "web's app page",
        "return document.getElementById('running-count')?.textContent === '3/3'",
    )
    .await;
    fits_a_narrow_window(browser, "app").await;
    click(browser, "#remove-button").await;
    browser.dismiss_alert().await.expect("cancel the removal");
    assert!(cluster.client.desired_lrp("web").await.is_ok(), "kept");
    click(browser, "#remove-button").await;
    browser.accept_alert().await.expect("confirm the removal");
    until(
        browser,
        "web gone from the apps page",
        "return location.hash === '#/apps' && document.querySelector('tr[data-app=\"too-big\"]') && \
         !document.querySelector('tr[data-app=\"web\"]')",
    )
    .await;
    assert!(
        cluster.client.desired_lrp("web").await.is_err(),
        "web is removed"
    );
    assert_eq!(
        text(browser, "#notice").await,
        "web removed",
        "the removal is confirmed"
    );

    cluster.stop().await;
}
