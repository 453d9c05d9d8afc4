"""Metrics, chosen by name: ``--metrics=[acc,f1_macro,top5]`` or ``--metrics=[mae,rmse,r2]``.

Each chosen metric becomes the history columns ``train_<name>`` and
``valid_<name>`` (TensorBoard ``epoch/...``), and ``test_<name>`` from
``bin/evaluate.py``; ``--monitor=valid_<name>`` picks best_model.pt by it.
The metrics come from torchmetrics: it accumulates over batches, reduces
across processes and knows whether larger is better (``higher_is_better``,
which ``--monitor_mode=auto`` follows).

To add a metric, add one entry to ``METRICS``: a function of ``(task,
num_outputs)`` returning a torchmetrics ``Metric``, e.g.::

    "f1_weighted": lambda task, n: tm.F1Score(**classes(task, n), average="weighted"),
    "max_abs_error": lambda task, n: mean_of(lambda p, t: (p - t).abs().amax(1), higher_is_better=False),

Metrics are given what torchmetrics expects (``TaskMetrics.update``): class
scores and labels for ``classification``, probabilities and 0/1 labels for
``binary``, values and targets of shape ``[N, columns]`` for ``regression``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

if TYPE_CHECKING:
    from torchmetrics import Metric


class _Lazy:
    """torchmetrics, imported at its first use: its import takes longer than torch's, and ``--help`` or a
    config error needs none of it."""

    def __getattr__(self, name: str) -> Any:
        import torchmetrics

        return getattr(torchmetrics, name)


tm = _Lazy()

TASKS = ("classification", "binary", "regression")
DEFAULT_METRICS = {"classification": ["acc"], "binary": ["acc"], "regression": ["mae", "rmse", "r2"]}


def classes(task: str, num_outputs: int) -> dict[str, Any]:
    """torchmetrics' arguments for class labels (a ``ValueError`` for regression).

    ``validate_args=False``: checking the values of every batch reads them back from the device.
    """
    if task == "classification":
        return {"task": "multiclass", "num_classes": num_outputs, "validate_args": False}
    if task == "binary":
        return {"task": "binary", "validate_args": False}
    raise ValueError(f"it needs class labels, but task={task}")


def top_k(k: int) -> Callable[[str, int], Metric]:
    """Accuracy counting a sample as right when its class is among the ``k`` largest outputs."""

    def make(task: str, num_outputs: int) -> Metric:
        if task != "classification" or num_outputs < k:
            raise ValueError(f"it needs task=classification with at least {k} classes")
        return tm.Accuracy(**classes(task, num_outputs), top_k=k)

    return make


def values(task: str) -> dict[str, Any]:
    """The arguments of a metric for continuous targets (a ``ValueError`` for other tasks)."""
    if task != "regression":
        raise ValueError(f"it needs continuous targets (task=regression), but task={task}")
    return {}


def mean_of(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], higher_is_better: bool) -> Metric:
    """A small function as a metric: the mean over samples of ``fn(predictions, targets)`` (a value per sample)."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        tm.MeanMetric.update(self, fn(preds, target))

    mean = type("MeanOf", (tm.MeanMetric,), {"update": update, "higher_is_better": higher_is_better})
    return mean(nan_strategy="disable")  # the other strategies look at the values: a read-back


METRICS: dict[str, Callable[[str, int], Metric]] = {
    "acc": lambda task, n: tm.Accuracy(**classes(task, n)),
    "f1_macro": lambda task, n: tm.F1Score(**classes(task, n), average="macro"),
    "top5": top_k(5),
    "auroc": lambda task, n: tm.AUROC(**classes(task, n)),
    "mae": lambda task, n: tm.MeanAbsoluteError(**values(task)),
    "rmse": lambda task, n: tm.MeanSquaredError(squared=False, **values(task)),
    "r2": lambda task, n: tm.R2Score(**values(task)),
}


@functools.cache
def higher_is_better(column: str) -> bool:
    """Is a larger value of the column ``column`` (``valid_acc``, ``test_rmse``, ``train_loss``) better, in any run?

    A metric of ``METRICS``: as torchmetrics says, asked of the metric built on the CPU for the first task it
    fits (the import of torchmetrics only then).  Losses and every other column: no.
    """
    name = column.split("_", 1)[-1]
    for task in TASKS if name in METRICS else ():
        try:
            return bool(METRICS[name](task, 10).higher_is_better)  # 10 outputs: enough classes for top5
        except ValueError:  # it does not fit this task
            continue
    return False


def metric_names(task: str, chosen: Sequence[str]) -> list[str]:
    """The metrics a run computes: those chosen, or the task's defaults when none are."""
    return list(chosen) or DEFAULT_METRICS[task]


class TaskMetrics:
    """The chosen metrics of a run, fed with the network's raw outputs and the targets of each batch.

    Raises ``ValueError`` naming the metric that cannot measure this task.
    """

    def __init__(self, names: Sequence[str], task: str, num_outputs: int, device: torch.device):
        self.task, self.metrics = task, {}
        for name in names:
            try:
                self.metrics[name] = METRICS[name](task, num_outputs).to(device)
            except ValueError as err:
                raise ValueError(f"metric {name} does not fit task={task} with {num_outputs} outputs: {err}") from None
            self.metrics[name].persistent(True)  # its accumulated state goes into the checkpoint

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        outputs = outputs.detach().float()
        if self.task == "binary":  # one logit per sample
            outputs = outputs.squeeze(1).sigmoid()
        for metric in self.metrics.values():
            metric.update(outputs, targets)

    def compute(self) -> dict[str, float]:
        """Every metric over what was given since ``reset`` (reads the values back from the device)."""
        return {name: float(metric.compute()) for name, metric in self.metrics.items()}

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()

    def state_dict(self) -> dict[str, Any]:
        return {name: metric.state_dict() for name, metric in self.metrics.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, metric in self.metrics.items():
            device = metric.device
            metric.load_state_dict(state[name])
            metric.to(device)

    def higher_is_better(self, column: str) -> bool:
        """Is a larger value of history column ``column`` (``valid_acc``, ``train_loss``) better?"""
        name = column.split("_", 1)[-1]
        return name in self.metrics and bool(self.metrics[name].higher_is_better)
