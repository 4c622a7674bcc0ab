//! The console's page frame and the pieces every page uses, as maud templates (checked
//! when the crate compiles; every interpolated value is HTML-escaped by maud).

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::SignInWays;
use super::css_path;
use super::session::Operator;

/// The sections of the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Tenants,
    Audit,
    System,
    Cluster,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · CapLiquify console" }
            link rel="stylesheet" href=(css_path());
        }
    }
}

/// A page of a signed-in operator: skip link, banner with the navigation and sign-out,
/// the main region.
pub fn page(title: &str, operator: &Operator, section: Section, body: Markup) -> Markup {
    let item = |s: Section, href: &str, label: &str| {
        html! {
            li {
                @if s == section {
                    a href=(href) aria-current="page" { (label) }
                } @else {
                    a href=(href) { (label) }
                }
            }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.banner {
                    a.brand href="/console" { "CapLiquify " span { "console" } }
                    nav aria-label="Console" {
                        ul {
                            (item(Section::Overview, "/console", "Overview"))
                            (item(Section::Tenants, "/console/tenants", "Tenants"))
                            (item(Section::Audit, "/console/audit", "Audit log"))
                            (item(Section::System, "/console/system", "System"))
                            (item(Section::Cluster, "/console/cluster", "Cluster"))
                        }
                    }
                    form.signout method="post" action="/console/sign-out" {
                        (csrf(operator))
                        span.who { "Signed in: " (operator.name) }
                        button type="submit" { "Sign out" }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden field carrying the session's CSRF token: in every form.
pub fn csrf(operator: &Operator) -> Markup {
    html! { input type="hidden" name="csrf" value=(operator.csrf); }
}

/// A page for a signed-out visitor or an error: the frame without navigation.
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.banner {
                    a.brand href="/console" { "CapLiquify " span { "console" } }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// What went wrong, and the way back.
pub fn message(title: &str, message: &str) -> Markup {
    bare(
        title,
        html! {
            p role="alert" { (message) }
            p { a href="/console" { "Back to the console" } }
        },
    )
}

/// The sign-in form; `token` prefills it (the demo's printed link), `error` says why the
/// last attempt failed.
pub fn sign_in(ways: SignInWays, token: Option<&str>, error: Option<&str>) -> Markup {
    bare(
        "Sign in",
        html! {
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            @if ways.clerk {
                form.card method="post" action="/console/sign-in/clerk" {
                    p { "Operators on the console's list (" code { "CAPLIQUIFY_CONSOLE_OPERATORS" } ") "
                        "sign in with their Clerk session: sign in to the application first, then "
                        "continue here. The session is exchanged once for a console session that "
                        "ends when you sign out or after 30 idle minutes." }
                    button type="submit" { "Continue with my Clerk session" }
                }
            }
            @if ways.token {
                form.card method="post" action="/console/sign-in" {
                    p { "Operators sign in with the admin token (" code { "CAPLIQUIFY_ADMIN_TOKEN" } "). "
                        "It is exchanged for a session that ends when you sign out or after 30 idle minutes." }
                    label for="token" { "Admin token" }
                    input #token type="password" name="token" required autocomplete="current-password"
                        value=[token];
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// A time as operators read it (UTC, to the minute), with the exact instant for machines.
pub fn time(at: DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M")) } }
}

pub fn opt_time(at: Option<DateTime<Utc>>) -> Markup {
    match at {
        Some(at) => time(at),
        None => html! { "—" },
    }
}

/// A tenant's status as a labelled badge.
pub fn status(status: &str) -> Markup {
    html! { span class={ "badge " (status) } { (status.replace('_', " ")) } }
}

/// A bar chart of `(label, value)` as SVG, drawn on the server (no script): each bar is
/// labelled with its value, and the title and description carry every number for screen
/// readers.
pub fn bar_chart(
    id: &str,
    title: &str,
    bars: &[(String, i64)],
    shown: &dyn Fn(i64) -> String,
) -> Markup {
    const WIDTH: i64 = 720;
    const HEIGHT: i64 = 200;
    const BASE: i64 = 170;
    let max = bars.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let slot = WIDTH / (bars.len().max(1) as i64);
    let description = bars
        .iter()
        .map(|(label, v)| format!("{label}: {}", shown(*v)))
        .collect::<Vec<_>>()
        .join(", ");
    html! {
        svg.chart viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img"
            aria-labelledby={ (id) "-title " (id) "-desc" } xmlns="http://www.w3.org/2000/svg" {
            title id={ (id) "-title" } { (title) }
            desc id={ (id) "-desc" } { (description) }
            line x1="0" y1=(BASE) x2=(WIDTH) y2=(BASE) stroke="#6b7685" stroke-width="1" {}
            @for (i, (label, value)) in bars.iter().enumerate() {
                @let height = value * 140 / max;
                @let x = i as i64 * slot + slot / 6;
                @let w = slot * 2 / 3;
                rect x=(x) y=(BASE - height) width=(w) height=(height) fill="#0b5cad" {}
                text x=(x + w / 2) y=(BASE - height - 4) text-anchor="middle" font-size="12" fill="#1b1f24" { (shown(*value)) }
                text x=(x + w / 2) y=(BASE + 16) text-anchor="middle" font-size="12" fill="#4a5360" { (label) }
            }
        }
    }
}
