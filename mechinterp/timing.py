"""Where a claims run's time went, from its results.json: per model, per claim, per stage.

    python -m mechinterp.timing reports/<run>          markdown tables (the README's come from here)

Each claim test records its wall time (setup + call + teardown) and the seconds of its top-level
progress stages (mechinterp.progress: "distribution", "SAE training", ...); "protocol" is the rest
(the thesis's own 8-prompt measurement, loading, checks, figures).
"""

from __future__ import annotations

import sys

import pandas as pd

from mechinterp.results import load_results


def claim_seconds(document: dict) -> pd.DataFrame:
    """One row per claim test that ran: claim, model, seconds, and seconds per stage (columns)."""
    rows = []
    for result in document["results"]:
        if result.get("seconds") is None or result["status"] in ("skipped", "not run"):
            continue
        stages = dict(result.get("stage_seconds") or {})
        row = {"claim": result["claim"], "model": result["spec"], "seconds": result["seconds"], **stages}
        row["protocol"] = max(0.0, result["seconds"] - sum(stages.values()))
        rows.append(row)
    return pd.DataFrame(rows).fillna(0.0)


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def tables(document: dict) -> str:
    frame = claim_seconds(document)
    if frame.empty:
        return "no claim test with a recorded time"
    stage_columns = [c for c in frame.columns if c not in ("claim", "model", "seconds")]
    by_model = frame.groupby("model")[["seconds", *stage_columns]].sum().reset_index().sort_values("seconds", ascending=False)
    by_claim = frame.sort_values("seconds", ascending=False)[["claim", "model", "seconds", *stage_columns]]
    run = document["run"]
    return "\n\n".join([
        f"Run {run['started_utc']} -> {run['finished_utc']}; claim-test seconds summed over processes: {frame['seconds'].sum():.0f}",
        "Per model (seconds):\n\n" + _markdown(by_model),
        "Per claim and model (seconds, longest first):\n\n" + _markdown(by_claim),
    ])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m mechinterp.timing RUN_DIR_OR_RESULTS_JSON", file=sys.stderr)
        return 2
    print(tables(load_results(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
