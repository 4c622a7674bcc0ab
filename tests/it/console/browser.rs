//! The console in a real browser: headless Chromium driven through chromedriver
//! (fantoccini), against the real service and PostgreSQL. Skipped, loudly, only when
//! `chromedriver` is not installed (`apt-get install chromium chromium-driver`; `.ci/run`
//! installs both). `UPDATE_SCREENSHOTS=1` also writes the screenshots under docs/console/.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use capliquify::access::Role;
use capliquify::billing::Tier;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::json;

use super::{ADMIN_TOKEN, app_with_console};
use crate::common::api::TestApp;

/// chromedriver and its Chromium, ended when dropped.
struct Driver {
    process: Child,
    client: Option<Client>,
    profile: tempfile::TempDir,
    downloads: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        // A test that panicked never closed its session: chromedriver's end leaves its
        // Chromium running. Its processes are the ones started with this test's own
        // profile folder.
        let marker = format!("--user-data-dir={}", self.profile.path().display());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == marker.as_bytes())
            {
                // SAFETY: kill(2) with a pid read from /proc and a plain signal.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

fn chromedriver() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join("chromedriver"))
        .find(|p| p.is_file())
}

/// A headless Chromium behind a fresh chromedriver, or `None` (with a loud message) when
/// chromedriver is not installed.
async fn browser(test: &str) -> Option<Driver> {
    let Some(path) = chromedriver() else {
        // CI installs it (.ci/run): there, a missing driver is a failure, not a skip.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: chromedriver is not installed, and CI must run the browser tests"
        );
        eprintln!(
            "\n{bang}\n!! SKIPPED {test}: chromedriver is not installed.\n!! Install it with \
             `apt-get install -y chromium chromium-driver` (.ci/run does) to run the browser tests.\n{bang}\n",
            bang = "!".repeat(78)
        );
        return None;
    };
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let process = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().unwrap();
    let downloads = tempfile::tempdir().unwrap();
    let mut driver = Driver {
        process,
        client: None,
        profile,
        downloads,
    };
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900",
                format!("--user-data-dir={}", driver.profile.path().display()),
            ],
            "prefs": {
                "download.default_directory": driver.downloads.path().display().to_string(),
                "download.prompt_for_download": false,
            },
        },
    });
    let caps = caps.as_object().unwrap().clone();
    // fantoccini's client is built for https too; rustls needs the process's provider named.
    capliquify::db::tls::install_crypto_provider();
    let url = format!("http://127.0.0.1:{port}");
    let mut last_error = None;
    for _ in 0..100 {
        match ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => {
                driver.client = Some(client);
                return Some(driver);
            }
            Err(e) => {
                last_error = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("chromedriver did not start a session: {last_error:?}");
}

impl Driver {
    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    async fn goto(&self, app: &TestApp, path: &str) {
        self.client().goto(&app.url(path)).await.unwrap();
    }

    async fn path(&self) -> String {
        self.client().current_url().await.unwrap().path().to_owned()
    }

    /// The page's heading. A click that submits a form may return before the next page
    /// has replaced this one: a heading gone stale meanwhile is read again.
    async fn h1(&self) -> String {
        self.text_of("h1").await
    }

    async fn text_of(&self, css: &str) -> String {
        let mut last = None;
        for _ in 0..50 {
            match self.client().find(Locator::Css(css)).await {
                Ok(element) => match element.text().await {
                    Ok(text) => return text,
                    Err(e) => last = Some(e),
                },
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css}: {last:?}");
    }

    /// Waits (up to 5 s) for the browser to be at `path`.
    async fn at(&self, path: &str) {
        let mut now = String::new();
        for _ in 0..50 {
            now = self.path().await;
            if now == path {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the browser is at {now}, not {path}");
    }

    /// Waits (up to 5 s) for the heading to read `text`.
    async fn heading(&self, text: &str) {
        let mut now = String::new();
        for _ in 0..50 {
            now = self.h1().await;
            if now == text {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page's heading is {now:?}, not {text:?}");
    }

    async fn click(&self, css: &str) {
        self.client()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self.client().find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn sign_in(&self, app: &TestApp) {
        self.goto(app, "/console").await;
        self.at("/console/sign-in").await;
        self.type_into("#token", ADMIN_TOKEN).await;
        self.click("form[action=\"/console/sign-in\"] button[type=submit]")
            .await;
        self.at("/console").await;
        self.heading("Overview").await;
    }

    /// The body text of the page.
    async fn text(&self) -> String {
        self.text_of("body").await
    }

    /// Waits (up to 10 s) for a finished download and returns its content.
    async fn downloaded(&self) -> String {
        for _ in 0..100 {
            let done = std::fs::read_dir(self.downloads.path())
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "csv"));
            if let Some(file) = done {
                return std::fs::read_to_string(file).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no CSV was downloaded");
    }

    async fn close(mut self) {
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
    }
}

#[tokio::test]
async fn an_operator_signs_in_finds_a_tenant_suspends_reactivates_and_exports_the_trail() {
    let Some(driver) = browser("console::browser::an_operator_signs_in…").await else {
        return;
    };
    let app = app_with_console().await;
    let t = app.tenant("browser-co", Tier::Professional).await;
    app.tenant("other-co", Tier::Starter).await;
    let owner = app.token_for(&t, Role::Owner);

    driver.sign_in(&app).await;
    // Find it through the navigation and the search form.
    driver.click("nav a[href='/console/tenants']").await;
    driver.type_into("#q", "browser").await;
    driver.click("form.filters button[type=submit]").await;
    for _ in 0..50 {
        let url = driver.client().current_url().await.unwrap();
        if url.query().is_some_and(|q| q.contains("q=browser")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = driver.text().await;
    assert!(
        listed.contains("browser-co") && !listed.contains("other-co"),
        "{listed}"
    );
    driver.click("a[href='/console/tenants/browser-co']").await;
    driver.heading("browser-co Inc.").await;

    // Suspend, with a reason: the tenant's API refuses its members.
    driver
        .click("a[href='/console/tenants/browser-co/suspend']")
        .await;
    driver.type_into("#reason", "chargeback under review").await;
    driver.click("main form button[type=submit]").await;
    driver.at("/console/tenants/browser-co").await;
    assert!(driver.text().await.contains("suspended"));
    app.get(&owner, "/api/v1/tenant")
        .await
        .problem(StatusCode::FORBIDDEN, "tenant_suspended");

    // A form whose CSRF token was tampered with is refused, and changes nothing.
    driver
        .goto(&app, "/console/tenants/browser-co/reactivate")
        .await;
    driver
        .client()
        .execute(
            "document.querySelector('main input[name=csrf]').value = 'forged'",
            vec![],
        )
        .await
        .unwrap();
    driver.click("main form button[type=submit]").await;
    driver.heading("Refused").await;
    assert_eq!(
        app.get(&owner, "/api/v1/tenant").await.status,
        StatusCode::FORBIDDEN
    );

    // Reactivate: the API answers again.
    driver.goto(&app, "/console/tenants/browser-co").await;
    driver
        .click("a[href='/console/tenants/browser-co/reactivate']")
        .await;
    driver.click("main form button[type=submit]").await;
    driver.at("/console/tenants/browser-co").await;
    assert_eq!(
        app.get(&owner, "/api/v1/tenant").await.status,
        StatusCode::OK
    );

    // The audit log, filtered to the tenant, exported as CSV by the browser.
    driver
        .click("a[href='/console/audit?tenant=browser-co']")
        .await;
    driver.heading("Audit log").await;
    let trail = driver.text().await;
    assert!(trail.contains("tenant.suspended") && trail.contains("tenant.reactivated"));
    driver.click("a[download]").await;
    let csv = driver.downloaded().await;
    assert!(csv.starts_with("time,tenant,action"), "{csv}");
    assert!(csv.contains("browser-co,tenant.suspended"), "{csv}");
    assert!(csv.contains("chargeback under review"), "{csv}");

    // Sign out: the session is gone, the pages send the browser to sign in again.
    driver.click("form.signout button").await;
    driver.at("/console/sign-in").await;
    driver
        .goto(&app, "/console/tenants/browser-co/suspend")
        .await;
    driver.at("/console/sign-in").await;
    driver.close().await;
}

/// The pages, at desktop and phone width, as committed under docs/console/. Only with
/// `UPDATE_SCREENSHOTS=1` (they change with every data and style change).
#[tokio::test]
async fn screenshots_of_every_page() {
    if std::env::var_os("UPDATE_SCREENSHOTS").is_none() {
        return;
    }
    let Some(driver) = browser("console::browser::screenshots_of_every_page").await else {
        return;
    };
    let app = app_with_console().await;
    let samples = [
        (
            "acme",
            "ACME Corp",
            Tier::Professional,
            Some(("monthly", 9_900, "USD", "active")),
        ),
        (
            "globex",
            "Globex",
            Tier::Enterprise,
            Some(("annual", 1_188_000, "USD", "active")),
        ),
        (
            "initech",
            "Initech",
            Tier::Starter,
            Some(("monthly", 2_900, "EUR", "past_due")),
        ),
        ("umbrella", "Umbrella", Tier::Starter, None),
        ("hooli", "Hooli", Tier::Professional, None),
    ];
    for (i, (slug, name, tier, subscription)) in samples.into_iter().enumerate() {
        let t = app.tenant(slug, tier).await;
        sqlx::query("UPDATE public.tenants SET name = $2 WHERE id = $1")
            .bind(t.tenant.id)
            .bind(name)
            .execute(&app.db.pool)
            .await
            .unwrap();
        if let Some((cycle, cents, currency, status)) = subscription {
            sqlx::query(
                "INSERT INTO public.subscriptions (tenant_id, stripe_customer_id, billing_cycle,
                     amount_cents, currency, status, current_period_end, created_at)
                 VALUES ($1, $2, $3::public.billing_cycle, $4, $5, $6::public.subscription_status,
                         now() + interval '20 days', now() - make_interval(months => $7))",
            )
            .bind(t.tenant.id)
            .bind(format!("cus_{slug}"))
            .bind(cycle)
            .bind(cents)
            .bind(currency)
            .bind(status)
            // Started months apart, so the overview's MRR chart has a history to show.
            .bind(10 - 3 * i as i32)
            .execute(&app.db.pool)
            .await
            .unwrap();
            sqlx::query(
                "UPDATE public.tenants SET subscription_status = $2::public.subscription_status WHERE id = $1",
            )
            .bind(t.tenant.id)
            .bind(status)
            .execute(&app.db.pool)
            .await
            .unwrap();
        }
    }
    app.db
        .tenancy()
        .suspend(
            "hooli",
            Some("abuse report"),
            &capliquify::audit::Actor::operator(),
        )
        .await
        .unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console");
    std::fs::create_dir_all(&dir).unwrap();
    let pages = [
        ("sign-in", "/console/sign-in"),
        ("overview", "/console"),
        ("tenants", "/console/tenants"),
        ("tenant", "/console/tenants/acme"),
        ("suspend", "/console/tenants/acme/suspend"),
        ("audit", "/console/audit"),
        ("system", "/console/system"),
    ];
    for (width, height, suffix) in [(1280, 900, "desktop"), (390, 844, "phone")] {
        driver
            .client()
            .set_window_size(width, height)
            .await
            .unwrap();
        for (name, path) in pages {
            if name == "overview" {
                driver.sign_in(&app).await;
            }
            driver.goto(&app, path).await;
            let png = driver.client().screenshot().await.unwrap();
            std::fs::write(dir.join(format!("{name}-{suffix}.png")), png).unwrap();
        }
        // Sign out, so the next round's sign-in page shows the form again.
        driver.click("form.signout button").await;
    }
    driver.close().await;
}

/// axe-core's browser build: `CAPLIQUIFY_AXE_JS`, or where `.ci/run` installs it
/// (`scripts/console-a11y`, `npm install`).
fn axe_source(test: &str) -> Option<String> {
    let path = std::env::var_os("CAPLIQUIFY_AXE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("scripts/console-a11y/node_modules/axe-core/axe.min.js")
        });
    match std::fs::read_to_string(&path) {
        Ok(source) => Some(source),
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: axe-core is not at {} ({e}), and CI must run the accessibility check",
                path.display()
            );
            eprintln!(
                "\n{bang}\n!! SKIPPED {test}: axe-core is not at {}.\n!! Install it with \
                 `(cd scripts/console-a11y && npm install --no-package-lock)` (.ci/run does).\n{bang}\n",
                path.display(),
                bang = "!".repeat(78)
            );
            None
        }
    }
}

/// Every console page, signed out and in, at desktop and phone width: axe-core finds no
/// serious or critical violation (WCAG 2 A/AA and best-practice rules). The script is
/// injected through WebDriver, which the pages' CSP (no script at all) does not govern.
#[tokio::test]
async fn every_console_page_passes_axe_core() {
    const TEST: &str = "console::browser::every_console_page_passes_axe_core";
    let Some(axe) = axe_source(TEST) else {
        return;
    };
    let Some(driver) = browser(TEST).await else {
        return;
    };
    let app = app_with_console().await;
    app.tenant("axe-co", Tier::Professional).await;
    let pages = [
        "/console/sign-in",
        "/console",
        "/console/tenants",
        "/console/tenants?q=axe",
        "/console/tenants/axe-co",
        "/console/tenants/axe-co/suspend",
        "/console/tenants/axe-co/purge",
        "/console/audit",
        "/console/system",
        "/console/cluster",
        "/console/no-such-page",
    ];
    let run = format!(
        "const done = arguments[arguments.length - 1];\n{axe}\n\
         axe.run(document, {{ resultTypes: ['violations'] }})\
            .then(r => done(r.violations\
                .filter(v => v.impact === 'serious' || v.impact === 'critical')\
                .map(v => `${{v.impact}} ${{v.id}}: ${{v.help}} (${{v.nodes.map(n => n.target.join(' ')).join(', ')}})`)))\
            .catch(e => done([`axe failed: ${{e}}`]));"
    );
    let mut found = Vec::new();
    for (width, height) in [(1280, 900), (390, 844)] {
        driver
            .client()
            .set_window_size(width, height)
            .await
            .unwrap();
        for (i, path) in pages.iter().enumerate() {
            if i == 1 {
                driver.sign_in(&app).await;
            }
            driver.goto(&app, path).await;
            let result = driver
                .client()
                .execute_async(&run, Vec::new())
                .await
                .unwrap();
            let violations: Vec<String> = serde_json::from_value(result).unwrap();
            for v in violations {
                found.push(format!("{path} at {width}px: {v}"));
            }
        }
        // Sign out (from a page that has the button), so the next round signs in again.
        driver.goto(&app, "/console").await;
        driver.click("form.signout button").await;
    }
    driver.close().await;
    assert!(
        found.is_empty(),
        "axe-core violations:\n{}",
        found.join("\n")
    );
}
