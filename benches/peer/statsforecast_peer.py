"""The statsforecast peer of benches/forecast.rs and benches/forecast_refresh.rs, run by them
in the same run.

Reads JSON on stdin: {"season": 12, "horizon": 24, "series": [[...], ...]} (oldest first),
optionally "models": ["AutoETS"] (default both), fits AutoETS (seasonal) and MSTL (AutoETS
trend) to each series on one core, and prints JSON:
{"models": {"AutoETS": {"forecasts": [[...]], "seconds": s}, "MSTL": {...}}}. Numba compiles
on first use: one untimed warm-up series comes first, so compile time is not counted.
"""
import json
import sys
import time

import numpy as np
from statsforecast.models import MSTL, AutoETS


def models(season):
    return {
        "AutoETS": lambda: AutoETS(season_length=season),
        "MSTL": lambda: MSTL(season_length=season, trend_forecaster=AutoETS(model="ZZN")),
    }


def main():
    job = json.load(sys.stdin)
    season, horizon = job["season"], job["horizon"]
    series = [np.asarray(s, dtype=float) for s in job["series"]]
    out = {}
    wanted = job.get("models")
    for name, make in models(season).items():
        if wanted is not None and name not in wanted:
            continue
        make().forecast(y=series[0], h=horizon)  # warm-up: numba compilation
        start = time.perf_counter()
        forecasts = [make().forecast(y=y, h=horizon)["mean"].tolist() for y in series]
        out[name] = {"forecasts": forecasts, "seconds": time.perf_counter() - start}
    json.dump({"models": out}, sys.stdout)


if __name__ == "__main__":
    main()
