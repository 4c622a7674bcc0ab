//! Forecast accuracy and throughput against the statsforecast peer, measured in the same
//! run on the same series.
//!
//! Accuracy: AirPassengers (tests/fixtures/air_passengers.csv), train 1949–1958, forecast
//! the 24 months of 1959–1960; MASE scaled by the training set's seasonal-naive MAE (m =
//! 12), and MAPE. Throughput: `--series N` (default 200) variants of the training series
//! (scaled and perturbed deterministically), one core each side: our `auto` (which
//! backtests four models on three origins before fitting the chosen one) and our single
//! `mstl_log` fit, against statsforecast's AutoETS and MSTL fit-and-forecast.
//!
//! ```text
//! python3 -m venv /tmp/sf && /tmp/sf/bin/pip install statsforecast==2.1.1
//! CAPLIQUIFY_PEER_PYTHON=/tmp/sf/bin/python cargo bench --bench forecast
//! ```
//!
//! Without the peer's Python the peer rows are left out and no ratio is printed.

use std::time::Instant;

use anyhow::Context as _;
use capliquify::domain::forecast::{self, Candidate, ModelChoice};
use support::BenchArgs;

#[allow(dead_code)]
mod support;

const SEASON: usize = 12;
const HORIZON: usize = 24;

fn air_passengers() -> Vec<f64> {
    include_str!("../tests/fixtures/air_passengers.csv")
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .filter_map(|l| l.split(',').nth(1)?.parse().ok())
        .collect()
}

/// MASE (scaled by the training set's in-sample seasonal-naive MAE) and MAPE, %.
fn scores(train: &[f64], forecast: &[f64], actual: &[f64]) -> (f64, f64) {
    let scale = (SEASON..train.len())
        .map(|t| (train[t] - train[t - SEASON]).abs())
        .sum::<f64>()
        / (train.len() - SEASON) as f64;
    let n = actual.len() as f64;
    let mae = forecast
        .iter()
        .zip(actual)
        .map(|(f, a)| (f - a).abs())
        .sum::<f64>()
        / n;
    let mape = forecast
        .iter()
        .zip(actual)
        .map(|(f, a)| ((f - a) / a).abs())
        .sum::<f64>()
        / n;
    (mae / scale, mape * 100.0)
}

/// `n` series like the training set: scaled 0.5–2× with up to ±5 % deterministic noise.
fn variants(train: &[f64], n: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|k| {
            let scale = 0.5 + 1.5 * (k as f64) / (n.max(2) - 1) as f64;
            train
                .iter()
                .enumerate()
                .map(|(t, v)| {
                    v * scale * (1.0 + 0.05 * ((t * 7 + k * 13) % 11) as f64 / 10.0 - 0.025)
                })
                .collect()
        })
        .collect()
}

/// One of our forecasters: a training series in, the 24 point forecasts out.
type Forecaster = Box<dyn Fn(&[f64]) -> Vec<f64>>;

struct Row {
    name: String,
    mase: f64,
    mape: f64,
    per_second: f64,
}

fn peer(python: &str, series: &[Vec<f64>]) -> anyhow::Result<serde_json::Value> {
    let job = serde_json::json!({ "season": SEASON, "horizon": HORIZON, "series": series });
    support::statsforecast_peer(python, &job)
}

/// Forecast accuracy (AirPassengers) and throughput beside the statsforecast peer
/// (docs/benchmarks.md).
#[derive(Debug, clap::Parser)]
#[command(name = "forecast", bin_name = "cargo bench --bench forecast --")]
struct Args {
    /// Series in the throughput run: AirPassengers' training years and N - 1 variants of it.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    series: u32,
}

impl BenchArgs for Args {}

fn main() -> anyhow::Result<()> {
    let args: Args = support::args();
    let count = args.series as usize;
    let all = air_passengers();
    let (train, test) = all.split_at(120);
    let mut series = vec![train.to_vec()];
    series.extend(variants(train, count.max(1) - 1));
    let mut rows = Vec::new();

    let ours: [(&str, Forecaster); 2] = [
        (
            "capliquify auto (backtest + fit)",
            Box::new(|y: &[f64]| {
                forecast::forecast(y, SEASON, HORIZON, ModelChoice::Auto, 0.95)
                    .prediction
                    .point
            }),
        ),
        (
            "capliquify mstl_log (one fit)",
            Box::new(|y: &[f64]| {
                forecast::predict(Candidate::MstlLog, y, SEASON, HORIZON, 0.95)
                    .map(|(p, _)| p.point)
                    .unwrap_or_default()
            }),
        ),
    ];
    for (name, run) in &ours {
        let first = run(train);
        let (mase, mape) = scores(train, &first, test);
        let start = Instant::now();
        for y in &series {
            std::hint::black_box(run(y));
        }
        let per_second = series.len() as f64 / start.elapsed().as_secs_f64();
        rows.push(Row {
            name: name.to_string(),
            mase,
            mape,
            per_second,
        });
    }
    let python = std::env::var("CAPLIQUIFY_PEER_PYTHON").unwrap_or_else(|_| "python3".into());
    let peer_rows = match peer(&python, &series) {
        Ok(result) => {
            let mut peer_rows = Vec::new();
            for name in ["AutoETS", "MSTL"] {
                let m = &result["models"][name];
                let first: Vec<f64> = serde_json::from_value(m["forecasts"][0].clone())?;
                let (mase, mape) = scores(train, &first, test);
                let seconds = m["seconds"].as_f64().context("peer seconds")?;
                peer_rows.push(Row {
                    name: format!("statsforecast {name}"),
                    mase,
                    mape,
                    per_second: series.len() as f64 / seconds,
                });
            }
            peer_rows
        }
        Err(err) => {
            println!(
                "peer not run ({err:#}); set CAPLIQUIFY_PEER_PYTHON to a Python with statsforecast"
            );
            Vec::new()
        }
    };
    println!(
        "AirPassengers, train 1949–1958, forecast 1959–1960 (24 months); {} series timed on one core",
        series.len()
    );
    println!(
        "{:<36} {:>8} {:>8} {:>12}",
        "model", "MASE", "MAPE %", "series/s"
    );
    println!(
        "{:<36} {:>8.3} {:>8.2} {:>12}",
        "seasonal naive (published MAPE 15.52)",
        scores(
            train,
            &train[108..]
                .iter()
                .chain(&train[108..])
                .copied()
                .collect::<Vec<_>>(),
            test
        )
        .0,
        15.52,
        "-"
    );
    for r in rows.iter().chain(&peer_rows) {
        println!(
            "{:<36} {:>8.3} {:>8.2} {:>12.1}",
            r.name, r.mase, r.mape, r.per_second
        );
    }
    if let Some(best_peer) = peer_rows.iter().min_by(|a, b| a.mase.total_cmp(&b.mase)) {
        let fastest_peer = peer_rows.iter().map(|r| r.per_second).fold(0.0, f64::max);
        for r in &rows {
            println!(
                "{}: MASE {:.3}× the best peer's ({}), throughput {:.2}× the fastest peer's",
                r.name,
                r.mase / best_peer.mase,
                best_peer.name,
                r.per_second / fastest_peer
            );
        }
    }
    Ok(())
}
