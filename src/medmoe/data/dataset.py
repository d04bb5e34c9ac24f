"""Image-report pairs as tensors, and the deterministic, resumable batch order of training."""
from __future__ import annotations

import functools
from typing import Callable, Iterator

import torch

from ..config import modality_index
from ..errors import ImageLoadError
from ..seeding import derive_seed
from .manifest import Row
from .transforms import ImageTransform


class ImageReportDataset(torch.utils.data.Dataset):
    """``dataset[(i, seed)]`` -> dict(image [3, S, S], report, tokens, modality index, row); an
    unreadable image or a report without words gives dict(row, error) instead, for the collate
    function to skip and count.

    ``seed`` drives the augmentation of this one draw, so a batch looks the same whichever worker
    loads it and whether or not the run was resumed. ``seed=None`` means no augmentation.
    ``transform``: the model's input (``ImageTransform.of(config)``); ``tokenize``: the model's
    ``text.tokenize`` (a ``ReportTokenizer``), so the loader workers cut the reports into word pieces
    (None: reports stay text).
    """

    def __init__(self, rows: list[Row], transform: ImageTransform, modalities: list[str],
                 tokenize: Callable | None = None):
        self.rows, self.transform, self.modalities, self.tokenize = rows, transform, modalities, tokenize

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        row = self.rows[index]
        try:
            image = self.transform.load(row.image, reduced=True)
        except ImageLoadError as exc:
            return {"row": row.row, "error": str(exc)}
        if seed is None:
            x = self.transform(image)
        else:
            x = self.transform.augment(image, torch.Generator().manual_seed(seed))
        return collate_item(x, row.report, modality_index(self.modalities, row.modality), row.row, self.tokenize)


def collate_item(image: torch.Tensor, report: str, modality: int, row, tokenize: Callable | None) -> dict:
    """What ``collate`` takes for one pair, its report cut into word pieces by ``tokenize`` (if
    given); dict(row, error) for a report without words."""
    try:
        tokens = tokenize.encode(report)[0] if tokenize is not None else None
    except ValueError as exc:
        return {"row": row, "error": f"report {exc}"}
    return {"image": image, "report": report, "tokens": tokens, "modality": modality, "row": row}


def collate(items: list[dict], tokenize: Callable | None = None) -> dict:
    """A batch of the usable items (tokens padded as ``tokenize`` pads them) and the skipped ones."""
    good = [it for it in items if "error" not in it]
    return {
        "images": torch.stack([it["image"] for it in good]) if good else torch.empty(0),
        "reports": [it["report"] for it in good],
        "tokens": tokenize.pad([it["tokens"] for it in good]) if good and tokenize is not None else None,
        "modality": torch.tensor([it["modality"] for it in good], dtype=torch.long),
        "rows": [it["row"] for it in good],
        "skipped": [{"row": it["row"], "reason": it["error"]} for it in items if "error" in it],
    }


class ResumableBatches(torch.utils.data.Sampler):
    """Endless batches of (index, augmentation seed) from step ``start`` on, for rank ``rank`` of
    ``world`` data-parallel processes.

    Epoch e is the permutation drawn from (seed, e); step s is global batch s mod steps-per-epoch
    of its epoch (``batch_size x world`` rows), of which each rank takes its own slice of
    ``batch_size``. The order is a pure function of (seed, step): resuming at step k replays
    exactly what an uninterrupted run sees from step k, and the ranks together see what one
    process with a ``world`` times larger batch sees.

    With ``groups`` (a group per row, e.g. its modality index), an epoch instead draws n rows with
    replacement, each group equally likely and rows uniform within their group (modality-balanced
    sampling, ``--balance modality``): a rare modality is seen as often as a common one.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world: int = 1,
                 groups: list[int] | None = None):
        if n < batch_size * world:
            raise ValueError(f"global batch {batch_size * world} is larger than the {n} usable training rows")
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start
        self.rank, self.world = rank, world
        self.steps_per_epoch = n // (batch_size * world)
        self.weights = None if groups is None else balanced_weights(groups)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step, size = self.start, self.batch_size * self.world
        while True:
            epoch, pos = divmod(step, self.steps_per_epoch)
            shuffle = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
            order = (torch.randperm(self.n, generator=shuffle) if self.weights is None else
                     torch.multinomial(self.weights, self.n, replacement=True, generator=shuffle))
            for b in range(pos, self.steps_per_epoch):
                first = b * size + self.rank * self.batch_size
                idx = order[first : first + self.batch_size].tolist()
                yield [(i, derive_seed(self.seed, "augment", step, i)) for i in idx]
                step += 1


def balanced_weights(groups: list[int]) -> torch.Tensor:
    """Sampling weight of each row: 1 / (size of its group), so every group is drawn equally often."""
    groups = torch.as_tensor(groups)
    _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse].double()


def make_loader(dataset, sampler: ResumableBatches | None = None, workers: int = 0, seed: int = 0,
                batch_size: int = 64) -> torch.utils.data.DataLoader:
    """Training order from ``sampler``, else the dataset in order; never touches the global RNG."""
    kwargs = dict(num_workers=workers, collate_fn=functools.partial(collate, tokenize=dataset.tokenize),
                  persistent_workers=workers > 0,
                  generator=torch.Generator().manual_seed(seed))
    if sampler is not None:
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, **kwargs)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, **kwargs)
