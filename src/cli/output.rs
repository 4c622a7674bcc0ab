//! How commands print: aligned tables for people, JSON for scripts.

use comfy_table::{ContentArrangement, LineStyle, Table, TableStyle};
use serde::Serialize;

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Columns separated by spaces, a dashed rule under the header, nothing else: easy to read
/// and to `grep`/`awk`.
const PLAIN: TableStyle =
    TableStyle::new().header_separator(LineStyle::none().fill('-').junction(' '));

/// An aligned, borderless table with a header rule.
pub fn table<I, R>(header: &[&str], rows: I) -> Table
where
    I: IntoIterator<Item = R>,
    R: IntoIterator<Item = String>,
{
    let mut table = Table::new();
    table
        .load_style(PLAIN)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for row in rows {
        table.add_row(row);
    }
    table
}

/// `Some(x)` as text, `None` as a dash.
pub fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A timestamp to the minute, in UTC.
pub fn when(value: chrono::DateTime<chrono::Utc>) -> String {
    value.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The fleet commands' progress bar: `{pos}/{len} <unit>`, elapsed time and estimate, and a
/// message; hidden when `hidden` (JSON output, nothing to do). Drawn on stderr, and not at
/// all when that is not a terminal: print failures with `bar.suspend(|| eprintln!(…))`,
/// never `bar.println`, which a hidden bar drops.
pub fn progress(len: u64, unit: &str, hidden: bool) -> anyhow::Result<indicatif::ProgressBar> {
    let bar = if hidden {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(len)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {unit}  {{elapsed}}  eta {{eta}}  {{msg}}"
        ))
        .map_err(|e| anyhow::anyhow!("progress bar template: {e}"))?,
    );
    Ok(bar)
}
