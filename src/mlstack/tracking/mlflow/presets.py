"""Specialised trackers (seed 004): presets of ExperimentTracker that fix tags and run naming.

Every preset tags its run `mlstack.process=<kind>`; nothing else differs from ExperimentTracker.
"""

from __future__ import annotations

from typing import Any

from mlstack.tracking.mlflow.tracker import ExperimentTracker, NestedRunTracker

PROCESS_TAG = "mlstack.process"


class _ProcessTracker(ExperimentTracker):
    process = ""

    def __init__(
        self, experiment_name: str | None = None, run_name: str | None = None, tags: dict[str, Any] | None = None
    ):
        super().__init__(experiment_name, run_name or self.process, {PROCESS_TAG: self.process, **(tags or {})})


class MLflowSweepTracker(_ProcessTracker):
    """Parent run of a hyper-parameter sweep; each trial is a child run."""

    process = "sweep"

    def trial(self, number: int, params: dict[str, Any] | None = None) -> NestedRunTracker:
        """`with sweep.trial(3, params) as trial:` a child run `<sweep>-trial-3` with its params."""
        self._require_run()
        child = NestedRunTracker(f"{self.run_name}-trial-{number}", {PROCESS_TAG: "trial", "mlstack.trial": number})
        child.start_run()
        if params:
            child.log_params(params)
        return child

    def log_best_trial(self, trial: ExperimentTracker | str, metric: str, value: float) -> None:
        """Record the winning trial on the sweep run: tag `best_trial_run_id`, metric `best_<metric>`."""
        self.set_tag("best_trial_run_id", trial if isinstance(trial, str) else trial.run_id)
        self.log_metric(f"best_{metric}", value)


class MLflowTrainingTracker(_ProcessTracker):
    """A training run; metrics per epoch use the epoch as step."""

    process = "training"

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.log_metrics(metrics, step=epoch)


class MLflowBenchmarkTracker(_ProcessTracker):
    """A benchmark run: results per configuration (e.g. batch size) as metrics stepped by it."""

    process = "benchmark"

    def log_benchmark(self, results: dict[str, float], batch_size: int | None = None) -> None:
        self.log_metrics(results, step=batch_size)


class MLflowConversionTracker(_ProcessTracker):
    """A model conversion run (e.g. to ONNX): the source run is recorded as a tag."""

    process = "conversion"

    def log_source_run(self, run_id: str) -> None:
        self.set_tag("mlstack.source_run_id", run_id)
