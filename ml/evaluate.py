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
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from ml import tracking
from ml.train import (
    AUTO,
    CANDIDATES,
    DEFAULT_TARGET_FPR,
    Dataset,
    fit_detector,
    load_dataset,
    select_model,
    split_patients,
)
from simulator import EpisodeType, JsonlSink, SimulationConfig, run_simulation
from vitals_lake import contract as c
from vitals_lake.alerting import AlertDecisions, AlertRule, AlertTracker
from vitals_lake.cli import usage_error
from vitals_lake.model.features import DATA_AGE, NEWS2_MAX_SUBSCORE

MODELS: Final = ("news2", *CANDIDATES)
COMBINED: Final = "combined"
NEWS2_CLINICAL_THRESHOLD: Final = 5  # "urgent response": NEWS2's own operating point
PREVALENCE: Final = 0.01
MAX_GAP_SECONDS: Final = 600.0  # a longer gap is a dropout, not monitored normal time


def simulate(
    out: Path, *, patients: int, hours: float, interval: float, seed: int, episode_rate: float = 0.2
) -> tuple[Path, Path]:
    config = simulation_config(
        out, patients=patients, hours=hours, interval=interval, seed=seed, episode_rate=episode_rate
    )
    out.mkdir(parents=True, exist_ok=True)
    readings = out / "readings.jsonl"
    sink = JsonlSink(readings)
    try:
        run_simulation(config, sink, sink_name="jsonl")
    finally:
        sink.close()
    return readings, out / "labels.jsonl"


def simulation_config(
    out: Path, *, patients: int, hours: float, interval: float, seed: int, episode_rate: float
) -> SimulationConfig:
    """The cohort :func:`simulate` runs (ValueError when a setting is out of range)."""
    if patients < 1 or hours <= 0:
        raise ValueError(f"need at least one patient and hours > 0, got {patients} and {hours}")
    return SimulationConfig(
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


def evaluate(
    readings: Path,
    labels: Path,
    out: Path,
    *,
    seed: int = 42,
    target_fpr: float = DEFAULT_TARGET_FPR,
    model: str = AUTO,
    rule: AlertRule | None = None,
    track: bool = False,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Every detector on the held-out patients, the combined rule, rule variants; files into ``out``.

    ``track`` logs the run (parameters, every metric, the report and figures) to MLflow."""
    rule = rule or AlertRule()
    t0 = time.perf_counter()
    data = load_dataset(readings, labels)
    timings: dict[str, float] = {"features_s": round(time.perf_counter() - t0, 2)}
    patients = data.patients()
    in_train = np.isin(patients, list(split_patients(patients, seed=seed)))
    test = ~in_train
    selection = None
    if model == AUTO:
        selection = select_model(data, in_train, seed=seed, target_fpr=target_fpr)
        model = selection.chosen
    ev = _Evaluation(data, test)

    results: dict[str, Any] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    chosen_alarms = np.zeros(len(patients), dtype=bool)
    for contaminated in (False, True):
        # Contaminated: every training row, episodes included, as if nobody had labelled the history.
        train_rows = in_train if contaminated else in_train & ~data.anomalous
        for name in MODELS:
            if contaminated and name == "news2":
                continue
            key = f"{name}_contaminated" if contaminated else name
            t = time.perf_counter()
            detector, threshold = fit_detector(
                name, data.features, train_rows, seed=seed, target_fpr=target_fpr
            )
            if name == "news2":
                threshold = NEWS2_CLINICAL_THRESHOLD
            timings[f"{key}_fit_s"] = round(time.perf_counter() - t, 2)
            t = time.perf_counter()
            scores = detector.score(data.features)
            timings[f"{key}_score_rows_per_s"] = round(len(scores) / max(time.perf_counter() - t, 1e-9))
            alarms = scores >= threshold
            # Each detector alone goes through the same persistence and cooldown as the combined rule.
            alone = ev.alerts(rule, alarms)
            results[key] = {**ev.ranking(scores, alarms), **ev.rule_metrics(alone), "threshold": threshold}
            if not contaminated:
                curves[name] = (scores[ev.scored], ev.positive[ev.scored])
                if name == model:
                    chosen_alarms = alarms

    news2 = data.features[c.NEWS2_SCORE].to_numpy(zero_copy_only=False)
    subscore = data.features[NEWS2_MAX_SUBSCORE].to_numpy(zero_copy_only=False)

    def combined(r: AlertRule) -> AlertDecisions:
        reasons = r.reasons(anomaly=chosen_alarms, news2=news2, news2_max_subscore=subscore)
        return ev.alerts(r, reasons > 0)

    results[COMBINED] = {
        **ev.ranking(None, combined(rule).condition),
        **ev.rule_metrics(combined(rule)),
        "model": model,
        "rule": asdict(rule),
    }
    variants = []
    for persistence in (0.0, rule.persistence_seconds, 3 * rule.persistence_seconds):
        for red in (False, True):
            r = replace(rule, persistence_seconds=persistence, red_subscore=red)
            m = ev.rule_metrics(combined(r))
            variants.append(
                {
                    "persistence_seconds": persistence,
                    "red_subscore": red,
                    "default": r == rule,
                    **{k: m[k] for k in ("clinical_episode_recall", "false_alarms_per_patient_day")},
                }
            )

    comb = results[COMBINED]
    bars = {
        "chosen_model": model,
        "chosen_model_auroc": results[model]["auroc"],
        "combined_clinical_episode_recall": comb["clinical_episode_recall"],
        "combined_recall_95ci": comb["clinical_episode_recall_95ci"],
        "combined_false_alarms_per_patient_day": comb["false_alarms_per_patient_day"],
        "met_recall_0_9": comb["clinical_episode_recall"] >= 0.9,
        "met_false_alarms_le_1": comb["false_alarms_per_patient_day"] <= 1.0,
        "met_auroc_0_93": results[model]["auroc"] >= 0.93,
    }
    report: dict[str, Any] = {
        "rows": int(data.features.num_rows),
        "test_rows": int(test.sum()),
        "patients": len(np.unique(patients)),
        "test_patients": len(np.unique(patients[test])),
        "episodes": len(data.episodes),
        "test_clinical_episodes": ev.clinical_episodes,
        "test_artefact_episodes": ev.artefact_episodes,
        "normal_patient_days": round(ev.normal_days, 2),
        "seed": seed,
        "target_fpr": target_fpr,
        "selection": (
            {"rule": selection.reason, **asdict(selection)}
            if selection
            else {"rule": "given", "chosen": model}
        ),
        "detectors": results,
        "rule_variants": variants,
        "bars": bars,
        "timings": timings,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=float) + "\n")
    figures = _figures(out, curves, results)
    (out / "report.md").write_text(_report_md(report, figures))
    if track:
        report["mlflow_run_id"] = tracking.track_run(
            run_name=f"evaluate-{model}",
            params={
                "readings": str(readings),
                "seed": seed,
                "target_fpr": target_fpr,
                "model": model,
                "rule": asdict(rule),
                "selection": report["selection"],
            },
            metrics={"detectors": results, "bars": bars},
            artifacts=[out / "evaluation.json", out / "report.md", *(out / f for f in figures)],
            tags={"stage": "evaluate"},
            tracking_uri=tracking_uri,
        )
    return report


class _Evaluation:
    """The held-out rows of a dataset and the measures every detector is judged by."""

    def __init__(self, data: Dataset, test: np.ndarray) -> None:
        self.data = data
        self.test = test
        self.positive = data.anomalous & ~data.artefact  # clinical deterioration
        self.scored = test & ~data.artefact  # the rows AUROC / AUPRC are computed on
        self.secs = data.seconds()
        self.pid = data.patients()
        age = data.features[DATA_AGE].to_numpy(zero_copy_only=False)
        self.normal_days = float(np.minimum(age[test & ~data.anomalous], MAX_GAP_SECONDS).sum()) / 86400
        held_out = {int(k) for k in data.episode[test & data.anomalous]}
        self.episodes = sorted(held_out)
        artefacts = [k for k in self.episodes if data.episodes[k].type is EpisodeType.SENSOR_ARTIFACT]
        self.artefact_episodes = len(artefacts)
        self.clinical_episodes = len(self.episodes) - len(artefacts)

    def alerts(self, rule: AlertRule, condition: np.ndarray) -> AlertDecisions:
        return AlertTracker(rule).update(patient_ids=self.pid, seconds=self.secs, condition=condition)

    def ranking(self, scores: np.ndarray | None, alarms: np.ndarray) -> dict[str, float]:
        """Row-level measures: AUROC / AUPRC of the scores, the alarm's recall and false-positive rate."""
        y = self.positive[self.scored]
        both = bool(y.any() and (~y).any())
        tpr = (
            float(alarms[self.scored & self.positive].mean()) if (self.scored & self.positive).any() else 0.0
        )
        normal = self.test & ~self.data.anomalous
        fpr = float(alarms[normal].mean()) if normal.any() else 0.0
        denom = tpr * PREVALENCE + fpr * (1 - PREVALENCE)
        out = {
            "row_recall": tpr,
            "row_fpr": fpr,
            "precision_at_1pct_prevalence": tpr * PREVALENCE / denom if denom > 0 else 0.0,
            "auroc": float("nan"),
            "auprc": float("nan"),
        }
        if scores is not None and both:
            out["auroc"] = float(roc_auc_score(y, scores[self.scored]))
            out["auprc"] = float(average_precision_score(y, scores[self.scored]))
        return out

    def rule_metrics(self, d: AlertDecisions) -> dict[str, Any]:
        """Episode-level measures of alerts: what a clinician would experience."""
        data = self.data
        hit: dict[str, list[bool]] = {}
        delays: list[float] = []
        for k in self.episodes:
            e = data.episodes[k]
            rows = (data.episode == k) & self.test
            # An artefact "detected" means an alert opened on it; an episode is caught if an alert is open.
            fired = rows & (d.opened if e.type is EpisodeType.SENSOR_ARTIFACT else d.open)
            hit.setdefault(str(e.type), []).append(bool(fired.any()))
            if fired.any() and e.type is not EpisodeType.SENSOR_ARTIFACT:
                delays.append(float(self.secs[fired].min() - e.start.timestamp()))
        clinical = [h for t, v in hit.items() if t != EpisodeType.SENSOR_ARTIFACT for h in v]
        caught = sum(clinical)
        opened_outside = d.opened & self.test & ~self.positive
        on_artefacts = int((opened_outside & data.artefact).sum())
        days = self.normal_days
        return {
            "recall_by_type": {t: float(np.mean(v)) for t, v in sorted(hit.items())},
            "clinical_episode_recall": caught / len(clinical) if clinical else float("nan"),
            "clinical_episode_recall_95ci": wilson_interval(caught, len(clinical)),
            "median_detection_delay_s": float(np.median(delays)) if delays else float("nan"),
            "detection_delays_s": [round(x, 1) for x in delays],
            # Every alert opened outside a deterioration is a false alarm, artefacts included.
            "false_alarms_per_patient_day": int(opened_outside.sum()) / days if days else float("nan"),
            "false_alarms_on_artefacts": on_artefacts,
            "alerts_opened": int((d.opened & self.test).sum()),
        }


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion: honest about recall on a few dozen episodes."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(float(centre - half), 4), round(float(centre + half), 4))


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

    fig, ax = plt.subplots(figsize=(9, 4))
    delays = [np.asarray(results[k]["detection_delays_s"]) / 60 for k in keys]
    ax.boxplot([d if d.size else [np.nan] for d in delays], tick_labels=keys)
    ax.set(ylabel="minutes from episode start to alert", title="Detection delay (caught clinical episodes)")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(out / "detection_delay.png", dpi=90)
    names.append("detection_delay.png")
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
    sel = r["selection"]
    lines = [
        "# Anomaly detection evaluation",
        "",
        f"{r['patients']} patients ({r['test_patients']} held out), {r['rows']} rows, {r['episodes']}"
        f" episodes; held out: {r['test_clinical_episodes']} clinical and {r['test_artefact_episodes']}"
        f" sensor-artefact episodes over {r['normal_patient_days']} normal patient-days. Thresholds fixed"
        f" on training normals at FPR {r['target_fpr']} (NEWS2 alone: {NEWS2_CLINICAL_THRESHOLD}).",
        "",
        f"Model choice ({sel['rule']}): **{sel['chosen']}**"
        + (
            " — validation AUROC "
            + ", ".join(f"{k} {v:.3f}" for k, v in sel["validation_auroc"].items())
            + f" ({sel['validation_patients']} validation patients inside the training split)."
            if "validation_auroc" in sel
            else "."
        ),
        "",
        "Every detector's alarms go through the same alert rule (persistence, clear, cooldown);"
        " `combined` adds the NEWS2 emergency arm to the chosen model.",
        "",
        "| detector | AUROC | AUPRC | precision @1 % | clinical recall | FA / patient-day"
        " | median delay (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, m in r["detectors"].items():
        lines.append(
            f"| {k} | {m['auroc']:.3f} | {m['auprc']:.3f} | {m['precision_at_1pct_prevalence']:.3f} |"
            f" {m['clinical_episode_recall']:.3f} | {m['false_alarms_per_patient_day']:.2f} |"
            f" {m['median_detection_delay_s']:.0f} |"
        )
    lines += ["", "## Recall by episode type (sensor_artifact: alerts opened, lower is better)", ""]
    for k, m in r["detectors"].items():
        lines.append(f"- {k}: " + ", ".join(f"{t} {v:.2f}" for t, v in m["recall_by_type"].items()))
    lines += [
        "",
        "## Alert rule variants (chosen model + NEWS2)",
        "",
        "| persistence (s) | red single-parameter arm | clinical recall | FA / patient-day |",
        "|---|---|---|---|",
    ]
    for v in r["rule_variants"]:
        mark = " (default)" if v["default"] else ""
        lines.append(
            f"| {v['persistence_seconds']:.0f}{mark} | {'on' if v['red_subscore'] else 'off'} |"
            f" {v['clinical_episode_recall']:.3f} | {v['false_alarms_per_patient_day']:.2f} |"
        )
    b = r["bars"]
    lo, hi = b["combined_recall_95ci"]
    lines += [
        "",
        "## Bars",
        "",
        f"- Combined rule clinical episode recall {b['combined_clinical_episode_recall']:.3f}"
        f" (95 % interval {lo:.2f}-{hi:.2f}; bar >= 0.9: {'met' if b['met_recall_0_9'] else 'NOT met'}).",
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
        "--model",
        choices=[AUTO, *CANDIDATES],
        default=AUTO,
        help="model of the combined rule (auto: best validation AUROC inside the training patients)",
    )
    defaults = AlertRule()
    parser.add_argument("--persistence-seconds", type=float, default=defaults.persistence_seconds)
    parser.add_argument("--clear-seconds", type=float, default=defaults.clear_seconds)
    parser.add_argument("--cooldown-seconds", type=float, default=defaults.cooldown_seconds)
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else var/ml/mlruns)"
    )
    parser.add_argument("--no-track", action="store_true", help="do not log the run to MLflow")
    args = parser.parse_args(argv)
    if (args.readings is None) != (args.labels is None):
        parser.error("give both --readings and --labels, or neither (simulate)")
    try:
        rule = AlertRule(
            persistence_seconds=args.persistence_seconds,
            clear_seconds=args.clear_seconds,
            cooldown_seconds=args.cooldown_seconds,
        )
        if args.readings is None:
            simulation_config(
                args.out / "sim",
                patients=args.patients,
                hours=args.hours,
                interval=args.interval,
                seed=args.seed,
                episode_rate=args.episode_rate,
            )
    except ValueError as exc:  # an out-of-range setting
        return usage_error(parser, str(exc))
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
    r = evaluate(
        readings,
        labels,
        args.out,
        seed=args.seed,
        model=args.model,
        rule=rule,
        track=not args.no_track,
        tracking_uri=args.tracking_uri,
    )
    for k, m in r["detectors"].items():
        print(
            f"{k:28s} AUROC {m['auroc']:.3f}  AUPRC {m['auprc']:.3f}"
            f"  recall {m['clinical_episode_recall']:.3f}"
            f"  FA/patient-day {m['false_alarms_per_patient_day']:.2f}"
        )
    b = r["bars"]
    print(
        f"chosen {b['chosen_model']} (AUROC {b['chosen_model_auroc']:.3f}); combined rule: clinical episode"
        f" recall {b['combined_clinical_episode_recall']:.3f} {tuple(b['combined_recall_95ci'])},"
        f" {b['combined_false_alarms_per_patient_day']:.2f} false alarms per patient-day"
        f" -> {args.out / 'evaluation.json'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
