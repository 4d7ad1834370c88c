"""Evaluate every detector on held-out patients; write ``evaluation.json``, ``report.md`` and figures.

    python -m ml.evaluate                       # simulates the default cohort first
    python -m ml.evaluate --readings R.jsonl --labels labels.jsonl --out var/ml

Thresholds are fixed on the TRAINING patients' normal rows; the test split is never used to tune.
Sensor artefacts are labelled episodes but not clinical ones: their rows are left out of AUROC/AUPRC,
their "recall" is reported (lower is better) and alerts on them are not counted as false alarms.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from ml.detectors import alert_decisions
from ml.features import NEWS2_MAX_SUBSCORE
from ml.train import DEFAULT_MODEL, DEFAULT_TARGET_FPR, Dataset, fit_detector, load_dataset, split_patients
from simulator import EpisodeType, JsonlSink, SimulationConfig, run_simulation
from vitals_lake import contract as c

MODELS: Final = ("news2", "zscore", "isolation_forest", "autoencoder")
COMBINED: Final = "combined"
NEWS2_CLINICAL_THRESHOLD: Final = 5  # "urgent response": NEWS2's own operating point
PREVALENCE: Final = 0.01
MAX_GAP_SECONDS: Final = 600.0  # a longer gap is a dropout, not monitored normal time


def simulate(
    out: Path, *, patients: int, hours: float, interval: float, seed: int, episode_rate: float = 0.2
) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    readings = out / "readings.jsonl"
    config = SimulationConfig(
        patients=patients,
        duration_seconds=hours * 3600,
        interval_seconds=interval,
        seed=seed,
        episode_rate=episode_rate,
        fast=True,
        start=datetime(2026, 11, 1, tzinfo=UTC) - timedelta(hours=hours),
        out_dir=out,
        admissions=False,
    )
    sink = JsonlSink(readings)
    try:
        run_simulation(config, sink, sink_name="jsonl")
    finally:
        sink.close()
    return readings, out / "labels.jsonl"


def evaluate(
    readings: Path,
    labels: Path,
    out: Path,
    *,
    seed: int = 42,
    target_fpr: float = DEFAULT_TARGET_FPR,
    chosen: str = DEFAULT_MODEL,
    persistence: int = 2,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = load_dataset(readings, labels)
    t_features = time.perf_counter() - t0
    patients = data.patients()
    in_train = np.isin(patients, list(split_patients(patients, seed=seed)))
    test = ~in_train
    types = np.array([str(e.type) for e in data.episodes] + [""])[data.episode]  # "" for -1
    artefact = types == str(EpisodeType.SENSOR_ARTIFACT)
    positive = data.anomalous & ~artefact
    scored = test & ~artefact  # rows AUROC/AUPRC are computed on

    results: dict[str, Any] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    alerts_by: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {"features_s": round(t_features, 2)}
    for contaminated in (False, True):
        train_rows = in_train if contaminated else in_train & ~data.anomalous
        for name in MODELS:
            if contaminated and name == "news2":
                continue
            t = time.perf_counter()
            detector, threshold = fit_detector(
                name, data.features, train_rows, seed=seed, target_fpr=target_fpr
            )
            if name == "news2":
                threshold = NEWS2_CLINICAL_THRESHOLD
            t_fit = time.perf_counter() - t
            t = time.perf_counter()
            scores = detector.score(data.features)
            t_score = time.perf_counter() - t
            alerts = scores >= threshold
            key = f"{name}_contaminated" if contaminated else name
            results[key] = _metrics(data, scores, alerts, positive, scored, test, artefact, threshold)
            timings[f"{key}_fit_s"] = round(t_fit, 2)
            timings[f"{key}_score_rows_per_s"] = round(len(scores) / max(t_score, 1e-9))
            if not contaminated:
                curves[name] = (scores[scored], positive[scored])
                alerts_by[name] = alerts
            if name == chosen and not contaminated:
                combined = alert_decisions(
                    scores,
                    threshold,
                    data.features[c.PATIENT_ID],
                    data.features[c.TIMESTAMP],
                    news2=np.nan_to_num(data.features[c.NEWS2_SCORE].to_numpy(zero_copy_only=False)),
                    news2_max_subscore=data.features[NEWS2_MAX_SUBSCORE].to_numpy(zero_copy_only=False),
                    persistence=persistence,
                )
                results[COMBINED] = _metrics(
                    data, scores, combined, positive, scored, test, artefact, threshold
                )
                results[COMBINED]["model"] = chosen
                results[COMBINED]["persistence"] = persistence

    clinical = [
        k for k, v in results[COMBINED]["recall_by_type"].items() if k != str(EpisodeType.SENSOR_ARTIFACT)
    ]
    clinical_recall = _clinical_recall(data, results[COMBINED], test)
    bars = {
        "combined_clinical_episode_recall": clinical_recall,
        "combined_false_alarms_per_patient_day": results[COMBINED]["false_alarms_per_patient_day"],
        "chosen_model": chosen,
        "chosen_model_auroc": results[chosen]["auroc"],
        "met_recall_0_9": clinical_recall >= 0.9,
        "met_false_alarms_le_1": results[COMBINED]["false_alarms_per_patient_day"] <= 1.0,
        "met_auroc_0_93": results[chosen]["auroc"] >= 0.93,
        "clinical_types": clinical,
    }
    report = {
        "rows": int(data.features.num_rows),
        "test_rows": int(test.sum()),
        "patients": len(np.unique(patients)),
        "test_patients": len(np.unique(patients[test])),
        "episodes": len(data.episodes),
        "test_episodes": len({int(k) for k in data.episode[test & data.anomalous]}),
        "seed": seed,
        "target_fpr": target_fpr,
        "detectors": results,
        "bars": bars,
        "timings": timings,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=float) + "\n")
    figures = _figures(out, curves, results)
    (out / "report.md").write_text(_report_md(report, figures))
    return report


def _metrics(  # noqa: PLR0917 - one call site, all masks of the same rows
    data: Dataset,
    scores: np.ndarray,
    alerts: np.ndarray,
    positive: np.ndarray,
    scored: np.ndarray,
    test: np.ndarray,
    artefact: np.ndarray,
    threshold: float,
) -> dict[str, Any]:
    y, s = positive[scored], scores[scored]
    both = bool(y.any() and (~y).any())
    tpr = float(alerts[scored & positive].mean()) if (scored & positive).any() else 0.0
    normal = test & ~data.anomalous
    fpr = float(alerts[normal].mean()) if normal.any() else 0.0
    denom = tpr * PREVALENCE + fpr * (1 - PREVALENCE)
    recall_by_type, delays = _episode_recall(data, alerts, test)
    return {
        "auroc": float(roc_auc_score(y, s)) if both else float("nan"),
        "auprc": float(average_precision_score(y, s)) if both else float("nan"),
        "threshold": float(threshold),
        "row_recall": tpr,
        "row_fpr": fpr,
        "precision_at_1pct_prevalence": tpr * PREVALENCE / denom if denom > 0 else 0.0,
        "recall_by_type": recall_by_type,
        "median_detection_delay_s": float(np.median(delays)) if delays else float("nan"),
        "false_alarms_per_patient_day": _false_alarms(data, alerts, test),
        "artefact_alert_rate": float(alerts[test & artefact].mean()) if (test & artefact).any() else 0.0,
    }


def _episode_recall(
    data: Dataset, alerts: np.ndarray, test: np.ndarray
) -> tuple[dict[str, float], list[float]]:
    secs = data.seconds()
    hit: dict[str, list[bool]] = {}
    delays: list[float] = []
    for k, e in enumerate(data.episodes):
        rows = (data.episode == k) & test
        if not rows.any():
            continue  # a training patient's episode, or one with no reading
        fired = rows & alerts
        hit.setdefault(str(e.type), []).append(bool(fired.any()))
        if fired.any() and e.type is not EpisodeType.SENSOR_ARTIFACT:
            delays.append(float(secs[fired].min() - e.start.timestamp()))
    return {t: float(np.mean(v)) for t, v in sorted(hit.items())}, delays


def _clinical_recall(data: Dataset, result: dict[str, Any], test: np.ndarray) -> float:
    counts = {str(e.type): 0 for e in data.episodes}
    for k in {int(k) for k in data.episode[test & data.anomalous]}:
        counts[str(data.episodes[k].type)] += 1
    num = sum(
        result["recall_by_type"][t] * n for t, n in counts.items() if t != EpisodeType.SENSOR_ARTIFACT and n
    )
    den = sum(n for t, n in counts.items() if t != EpisodeType.SENSOR_ARTIFACT)
    return float(num / den) if den else float("nan")


def _false_alarms(data: Dataset, alerts: np.ndarray, test: np.ndarray) -> float:
    """Alert runs starting outside any episode, per patient-day of normal (unlabelled) time."""
    pid = data.patients()
    outside = alerts & ~data.anomalous & test
    prev_same = np.r_[False, (pid[1:] == pid[:-1]) & outside[:-1]]  # rows are sorted by patient, time
    starts = int((outside & ~prev_same).sum())
    age = data.features["data_age_seconds"].to_numpy(zero_copy_only=False)
    normal_days = float(np.minimum(age[test & ~data.anomalous], MAX_GAP_SECONDS).sum()) / 86400
    return starts / normal_days if normal_days > 0 else float("nan")


def _figures(
    out: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], results: dict[str, Any]
) -> list[str]:
    import matplotlib  # noqa: PLC0415 - only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names: list[str] = []
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, (s, y) in curves.items():
        if y.any() and (~y).any():
            fpr, tpr, _ = roc_curve(y, s)
            roc.plot(fpr, tpr, label=f"{name} ({results[name]['auroc']:.3f})")
            p, r, _ = precision_recall_curve(y, s)
            pr.plot(r, p, label=f"{name} ({results[name]['auprc']:.3f})")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (held-out patients)")
    pr.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    roc.legend(fontsize=8)
    pr.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "roc_pr.png", dpi=90)
    names.append("roc_pr.png")
    plt.close(fig)

    keys = [*MODELS, COMBINED]
    types = sorted({t for k in keys for t in results[k]["recall_by_type"]})
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(keys)
    for i, k in enumerate(keys):
        vals = [results[k]["recall_by_type"].get(t, np.nan) for t in types]
        ax.bar(np.arange(len(types)) + i * width, vals, width, label=k)
    ax.set_xticks(np.arange(len(types)) + 0.4 - width / 2, types, rotation=20)
    ax.set(ylabel="episodes detected", title="Recall by episode type (sensor_artifact: lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "recall_by_type.png", dpi=90)
    names.append("recall_by_type.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(keys, [results[k]["false_alarms_per_patient_day"] for k in keys])
    ax.axhline(1.0, color="red", linestyle="--", linewidth=1)
    ax.set(ylabel="false alarms per patient-day", title="False alarms (alert runs outside episodes)")
    fig.tight_layout()
    fig.savefig(out / "false_alarms.png", dpi=90)
    names.append("false_alarms.png")
    plt.close(fig)
    return names


def _report_md(r: dict[str, Any], figures: list[str]) -> str:
    lines = [
        "# Anomaly detection evaluation",
        "",
        f"{r['patients']} patients ({r['test_patients']} held out), {r['rows']} rows,"
        f" {r['episodes']} episodes ({r['test_episodes']} in the held-out patients);"
        " thresholds fixed on training normals at"
        f" FPR {r['target_fpr']} (NEWS2: {NEWS2_CLINICAL_THRESHOLD}).",
        "",
        "| detector | AUROC | AUPRC | precision @1 % | FA / patient-day | median delay (s)"
        " | artefact alerts |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, m in r["detectors"].items():
        lines.append(
            f"| {k} | {m['auroc']:.3f} | {m['auprc']:.3f} | {m['precision_at_1pct_prevalence']:.3f} |"
            f" {m['false_alarms_per_patient_day']:.2f} | {m['median_detection_delay_s']:.0f} |"
            f" {m['artefact_alert_rate']:.2f} |"
        )
    lines += ["", "## Recall by episode type", ""]
    for k, m in r["detectors"].items():
        lines.append(f"- {k}: " + ", ".join(f"{t} {v:.2f}" for t, v in m["recall_by_type"].items()))
    b = r["bars"]
    lines += [
        "",
        "## Bars",
        "",
        f"- Combined rule clinical episode recall {b['combined_clinical_episode_recall']:.3f} (bar >= 0.9:"
        f" {'met' if b['met_recall_0_9'] else 'NOT met'}).",
        f"- Combined rule false alarms per patient-day {b['combined_false_alarms_per_patient_day']:.2f}"
        f" (bar <= 1: {'met' if b['met_false_alarms_le_1'] else 'NOT met'}).",
        f"- Chosen model ({b['chosen_model']}) AUROC {b['chosen_model_auroc']:.3f} (bar >= 0.93:"
        f" {'met' if b['met_auroc_0_93'] else 'NOT met'}).",
        "",
        *(f"![{f}]({f})" for f in figures),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.evaluate", description=__doc__)
    parser.add_argument("--readings", type=Path)
    parser.add_argument("--labels", type=Path)
    parser.add_argument("--out", type=Path, default=Path("var/ml"))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--patients", type=int, default=200, help="simulated when --readings is omitted")
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between readings")
    parser.add_argument("--episode-rate", type=float, default=0.2)
    parser.add_argument(
        "--model", choices=MODELS[1:], default=DEFAULT_MODEL, help="model of the combined rule"
    )
    parser.add_argument("--persistence", type=int, default=2)
    args = parser.parse_args(argv)
    if (args.readings is None) != (args.labels is None):
        parser.error("give both --readings and --labels, or neither (simulate)")
    readings, labels = args.readings, args.labels
    if readings is None:
        readings, labels = simulate(
            args.out / "sim",
            patients=args.patients,
            hours=args.hours,
            interval=args.interval,
            seed=args.seed,
            episode_rate=args.episode_rate,
        )
    r = evaluate(readings, labels, args.out, seed=args.seed, chosen=args.model, persistence=args.persistence)
    for k, m in r["detectors"].items():
        print(
            f"{k:28s} AUROC {m['auroc']:.3f}  AUPRC {m['auprc']:.3f}"
            f"  FA/patient-day {m['false_alarms_per_patient_day']:.2f}"
        )
    b = r["bars"]
    print(
        f"combined rule: clinical episode recall {b['combined_clinical_episode_recall']:.3f},"
        f" {b['combined_false_alarms_per_patient_day']:.2f} false alarms per patient-day;"
        f" {b['chosen_model']} AUROC {b['chosen_model_auroc']:.3f} -> {args.out / 'evaluation.json'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
