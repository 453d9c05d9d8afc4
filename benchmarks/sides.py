"""The reference sides the generated trainer is compared with: a bare PyTorch loop and Lightning.

Both are given what the trainer gets: the same network built from the same
seed, the same tensors (taken from the project's own ``build``), the same
batch order (``InMemoryBatches.order(epoch)``), the same optimizer and loss,
and a validation pass per epoch.  Only the loop around them differs.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from project import Project, TrainerRun, clone_state, null_terminal, sync
from torch import nn

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Workload:
    """The data of one comparison as the project builds it for the trainer, for the other sides."""

    cfg: object  # the project's config (OmegaConf)
    train: object  # the project's InMemoryBatches of the training split (tensors and order(epoch))
    valid: object  # ... and of the validation split
    num_classes: int
    transform: Transform | None  # hand-written normalisation, the same arithmetic as the dataset's
    device: torch.device


def make_workload(project: Project, cfg, normalise: bool) -> Workload:
    """The project's own splits and batches for ``cfg`` (built outside every timer)."""
    device = project.device(cfg)
    built = project.experiment.build(cfg, device)
    num_classes = project.datasets.build_dataset(cfg.data).num_classes
    transform = None
    if normalise:  # CIFAR-10: uint8 images -> normalised floats, as Cifar10Loader.batch_transform without augment
        mean = torch.tensor(project.cifar10.MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(project.cifar10.STD, device=device).view(1, 3, 1, 1)

        def transform(x: torch.Tensor) -> torch.Tensor:
            return (x.float() / 255 - mean) / std

    return Workload(cfg, built["batches"]["train"], built["batches"]["valid"], num_classes, transform, device)


def seeded_network(project: Project, workload: Workload) -> nn.Module:
    """The network the trainer starts from: same registry entry, same seed, nothing consumed in between."""
    torch.manual_seed(workload.cfg.seed)
    outputs = workload.cfg.model.output_shape or workload.num_classes
    shape = list(workload.train.x.shape[1:])
    return project.networks.build_network(workload.cfg.model, shape, outputs).to(workload.device)


def make_optimizer(network: nn.Module, cfg) -> torch.optim.Optimizer:
    """SGD with the config's lr, momentum and weight decay (the trainer's optimizer for these configs)."""
    assert cfg.optimizer.name == "SGD" and not cfg.optimizer.extra, "the benchmark configs use plain SGD"
    opt = cfg.optimizer
    return torch.optim.SGD(network.parameters(), lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)


def batches(
    x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, batch_size: int, transform: Transform | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Hand-written batching: index slices of the tensors in ``order``.

    With ``index_select``, as the project's ``InMemoryBatches`` does (``x[index]``
    is 10-20x slower on uint8 images on a CPU): the rows compare the loops, not
    two ways of slicing.
    """
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        inputs = x.index_select(0, index)
        yield (transform(inputs) if transform else inputs), y.index_select(0, index)


# -- the bare loop --------------------------------------------------------------------------------------
def run_bare(project: Project, workload: Workload, epochs: int) -> TrainerRun:
    """What one would write by hand: train, then validate, every epoch; no logging, no checkpoints."""
    network = seeded_network(project, workload)
    initial = clone_state(network)
    optimizer = make_optimizer(network, workload.cfg)
    loss_fn = nn.CrossEntropyLoss()
    train, valid, batch_size = workload.train, workload.valid, workload.cfg.batch_size
    valid_order = torch.arange(len(valid.x), device=workload.device)

    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        network.train()
        train_sum = torch.zeros((), device=workload.device)  # summed on the device: no sync per step
        for x, y in batches(train.x, train.y, train.order(epoch), batch_size, workload.transform):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(network(x), y)
            loss.backward()
            optimizer.step()
            train_sum += loss.detach() * len(y)
        network.eval()
        valid_sum = torch.zeros((), device=workload.device)
        correct = torch.zeros((), device=workload.device, dtype=torch.long)
        with torch.no_grad():
            for x, y in batches(valid.x, valid.y, valid_order, batch_size, workload.transform):
                outputs = network(x)
                valid_sum += loss_fn(outputs, y) * len(y)
                correct += (outputs.argmax(1) == y).sum()
        valid_loss, train_loss = valid_sum.item() / len(valid.x), train_sum.item() / len(train.x)
    sync(workload.device)
    seconds = time.perf_counter() - start
    return TrainerRun(seconds, train_loss, valid_loss, initial, clone_state(network))


# -- Lightning ------------------------------------------------------------------------------------------
def lightning_missing() -> str | None:
    """None if Lightning can be imported, else why not."""
    try:
        import lightning  # noqa: F401
    except ImportError as err:
        return f"lightning is not importable ({err}); pip install -r requirements-dev.txt"
    return None


class _EpochBatches:
    """An iterable Lightning can use as a dataloader: each pass serves the epoch it is asked for."""

    def __init__(self, x, y, batch_size: int, transform: Transform | None, order: Callable[[], torch.Tensor]):
        self.x, self.y, self.batch_size, self.transform, self.order = x, y, batch_size, transform, order

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return batches(self.x, self.y, self.order(), self.batch_size, self.transform)


def run_lightning(project: Project, workload: Workload, epochs: int, work_dir: Path) -> TrainerRun:
    """Lightning's Trainer with the features that match the generated trainer's, into a fresh folder.

    On: a checkpoint every epoch (``ModelCheckpoint``), TensorBoard and CSV
    loggers (the trainer writes TensorBoard and history.csv) at the trainer's
    ``log_every_steps``, the tqdm progress bar redrawn every ``log_every_steps``
    steps (its default, every step, would be slower) on a null terminal.  Off:
    the sanity validation and the model summary, which the trainer does not do.
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    for name in ("lightning.pytorch", "lightning.fabric"):  # "GPU available: ..." and friends
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg = workload.cfg

    class Classifier(L.LightningModule):
        def __init__(self, network: nn.Module):
            super().__init__()
            self.network, self.loss_fn = network, nn.CrossEntropyLoss()

        def training_step(self, batch, batch_idx):
            x, y = batch
            outputs = self.network(x)
            loss = self.loss_fn(outputs, y)
            self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(y))
            self.log("train_acc", (outputs.argmax(1) == y).float().mean(), on_epoch=True, batch_size=len(y))
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            outputs = self.network(x)
            self.log("valid_loss", self.loss_fn(outputs, y), batch_size=len(y))
            self.log("valid_acc", (outputs.argmax(1) == y).float().mean(), batch_size=len(y))

        def configure_optimizers(self):
            return make_optimizer(self.network, cfg)

    network = seeded_network(project, workload)
    initial = clone_state(network)
    module = Classifier(network)
    train, valid = workload.train, workload.valid
    # Lightning counts epochs from 0 and the trainer from 1: epoch e here is the trainer's e + 1.
    train_data = _EpochBatches(
        train.x, train.y, cfg.batch_size, workload.transform, lambda: train.order(module.current_epoch + 1)
    )
    valid_order = torch.arange(len(valid.x), device=workload.device)
    valid_data = _EpochBatches(valid.x, valid.y, cfg.batch_size, workload.transform, lambda: valid_order)
    folder = Path(tempfile.mkdtemp(dir=work_dir, prefix="lightning-"))
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator=workload.device.type,
        devices=1,
        default_root_dir=folder,
        logger=[TensorBoardLogger(folder, name="tb"), CSVLogger(folder, name="csv")],
        log_every_n_steps=cfg.log_every_steps,
        callbacks=[ModelCheckpoint(dirpath=folder / "checkpoints"), TQDMProgressBar(refresh_rate=cfg.log_every_steps)],
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )
    with null_terminal(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "does not have many workers": about DataLoaders, not used here
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=train_data, val_dataloaders=valid_data)
        sync(workload.device)
        seconds = time.perf_counter() - start
    metrics = trainer.callback_metrics
    return TrainerRun(
        seconds,
        train_loss=float(metrics["train_loss_epoch"]),
        valid_loss=float(metrics["valid_loss"]),
        initial=initial,
        final=clone_state(network),
        features={"checkpoints": len(list((folder / "checkpoints").glob("*.ckpt")))},
    )
