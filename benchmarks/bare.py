#!/usr/bin/env python
"""The bare, hand-written training loop the project's trainer is measured against.

``run.py`` imports it and runs ``train`` in its own process on the project's
network and augmentation.  Run as a script it is a whole bare program, side B
of ``process/cnn``: import, read the CIFAR-10 binary files, carve the
validation split, train, ``torch.save`` a checkpoint per epoch, print the last
epoch's losses as JSON::

    python bare.py DATA_ROOT OUT_DIR SETTINGS_JSON PARTS_DIR

``PARTS_DIR/project_parts.py`` is the source of the project's ``CNN`` and
``random_crop_flip``, copied there by ``run.py``: importing them from the
project's package would import torchvision too, which a bare script does not.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The training order of ``epoch``: a permutation seeded with ``(seed, epoch)``, as the project draws it."""
    mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint64)[0] >> np.uint64(1))
    return torch.randperm(n, generator=torch.Generator().manual_seed(mixed)).to(device)


def batches(x, y, order, batch_size, transform=None):
    """Index slices of ``x`` and ``y`` in ``order`` (``index_select``, as the project cuts its batches)."""
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        inputs = x.index_select(0, index)
        yield (transform(inputs) if transform else inputs), y.index_select(0, index)


def image_transform(mean, std, device: torch.device, augment=None):
    """uint8 images -> normalised floats, augmented first by ``augment`` if given (the dataset's arithmetic)."""
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (mean, std))

    def transform(x: torch.Tensor) -> torch.Tensor:
        return ((augment(x) if augment else x).float() / 255 - mean) / std

    return transform


def optimizer(network: nn.Module, s: dict) -> torch.optim.SGD:
    return torch.optim.SGD(network.parameters(), lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"])


def train(network, data, s: dict, epochs: int, transforms=(None, None), save_dir: Path | None = None):
    """Train ``network`` on ``data = (x_train, y_train, x_valid, y_valid)``, validating every epoch.

    ``s``: batch_size, lr, momentum, weight_decay, lr_schedule, seed.  Returns
    ``(seconds, last train loss, last validation loss)``; only the epochs are timed.
    """
    x, y, x_valid, y_valid = data
    device = x.device
    opt, loss_fn, batch_size = optimizer(network, s), nn.CrossEntropyLoss(), s["batch_size"]
    valid_order = torch.arange(len(x_valid), device=device)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        for group in opt.param_groups:  # the last [from_epoch, lr] of the schedule that has started
            group["lr"] = ([s["lr"]] + [lr for first, lr in s["lr_schedule"] if epoch >= first])[-1]
        network.train()
        train_sum = torch.zeros((), device=device)  # summed on the device: no read-back per step
        for xb, yb in batches(x, y, epoch_order(len(x), s["seed"], epoch, device), batch_size, transforms[0]):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(network(xb), yb)
            loss.backward()
            opt.step()
            train_sum += loss.detach() * yb.shape[0]
        network.eval()
        valid_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long)
        with torch.no_grad():
            for xb, yb in batches(x_valid, y_valid, valid_order, batch_size, transforms[1]):
                outputs = network(xb)
                valid_sum += loss_fn(outputs, yb) * yb.shape[0]
                correct += (outputs.argmax(1) == yb).sum()
        train_loss, valid_loss = train_sum.item() / len(x), valid_sum.item() / len(x_valid)
        print(
            f"epoch {epoch}: train loss {train_loss:.4g}, valid loss {valid_loss:.4g}, acc {correct.item() / len(x_valid):.4g}"
        )
        if save_dir is not None:
            state = {"network": network.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch}
            torch.save(state, save_dir / f"epoch_{epoch}.pt")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, train_loss, valid_loss


def read_cifar10(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The training records of the binary CIFAR-10 files: uint8 images [N, 3, 32, 32] and labels."""
    files = [root / "cifar-10-batches-bin" / f"data_batch_{i}.bin" for i in range(1, 6)]
    records = np.concatenate([np.fromfile(f, dtype=np.uint8) for f in files]).reshape(-1, 1 + 3 * 32 * 32)
    return torch.from_numpy(records[:, 1:].copy()).view(-1, 3, 32, 32), torch.from_numpy(records[:, 0].astype(np.int64))


def main(argv: list[str]) -> None:
    root, out, settings, parts = argv
    s = json.loads(settings)
    sys.path.insert(0, parts)
    from project_parts import CNN, random_crop_flip

    device = torch.device(s["device"])
    x, y = read_cifar10(Path(root))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(s["split_seed"]))
    valid, train_part = order[: round(len(y) * s["validation_split"])], order[round(len(y) * s["validation_split"]) :]
    data = [t.to(device) for t in (x[train_part], y[train_part], x[valid], y[valid])]
    torch.manual_seed(s["seed"])
    network = CNN([3, 32, 32], 10, s["n_filters"]).to(device)
    augment = random_crop_flip if s["augment"] else None
    transforms = image_transform(s["mean"], s["std"], device, augment), image_transform(s["mean"], s["std"], device)
    seconds, train_loss, valid_loss = train(network, data, s, s["epochs"], transforms, Path(out))
    print(json.dumps({"seconds": seconds, "train_loss": train_loss, "valid_loss": valid_loss}))


if __name__ == "__main__":
    main(sys.argv[1:])
