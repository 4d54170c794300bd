"""Training data: LitData StreamingDataset/StreamingDataLoader over a tokenize artifact, repeated for as many epochs as
the step budget needs, with a resumable position.

`TrainData.next()` returns a `LongTensor[micro_batch, seq_len + 1]`; when an epoch ends it starts the next one (the
paper's iterators wrap around when a refined pool is smaller than the budget, reference code
`train/`; paper Table 7 lists the epochs). `state_dict()` is
the StreamingDataLoader's own state (epoch, samples yielded, shuffle seed), which LitData restores to the exact
position, including mid-epoch and at epoch boundaries. Shuffling is LitData's: chunk order plus order within chunks,
reseeded every epoch from `seed + epoch`, the same on every rank; each rank reads a disjoint share of the windows.
The seed is `train.data_seed`, else `train.seed` (which alone seeds the model's init): sweeping data_seed varies
the order of the batches with the init fixed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # it otherwise asks PyPI on import (30 s offline)


def data_info(data_dir: Path) -> dict[str, Any]:
    """The tokenize artifact's `tokens.json`, with a clear error when the input is not one."""
    path = Path(data_dir) / "tokens.json"
    if not path.is_file() or not (Path(data_dir) / "train" / "index.json").is_file():
        raise FileNotFoundError(f"input 'data': {data_dir} is not a tokenize artifact (needs tokens.json and "
                                "train/index.json)")
    return json.loads(path.read_text())


def _dataset(split_dir: Path, block_size: int, shuffle: bool, seed: int, drop_last: bool):
    from litdata import StreamingDataset
    from litdata.streaming.item_loader import TokensLoader

    return StreamingDataset(input_dir=str(split_dir), item_loader=TokensLoader(block_size=block_size),
                            shuffle=shuffle, drop_last=drop_last, seed=seed)


class TrainData:
    """An endless, resumable stream of training micro-batches (this rank's share)."""

    def __init__(self, data_dir: Path, seq_len: int, micro_batch_size: int, seed: int, num_workers: int = 0):
        from litdata import StreamingDataLoader

        self.dataset = _dataset(Path(data_dir) / "train", seq_len + 1, shuffle=True, seed=seed, drop_last=True)
        self.loader = StreamingDataLoader(self.dataset, batch_size=micro_batch_size, num_workers=num_workers,
                                          drop_last=True, pin_memory=False)
        if len(self.loader) == 0:
            raise ValueError(f"{data_dir}/train: {len(self.dataset)} windows on this rank make no micro-batch of "
                             f"{micro_batch_size}; use more data or a smaller train.micro_batch_size")
        self._it = None

    @property
    def epoch(self) -> int:
        """1-based epoch of the batch last returned (0 before the first)."""
        return int(self.loader.current_epoch)

    @property
    def batches_per_epoch(self) -> int:
        return len(self.loader)

    def next(self):
        if self._it is None:
            self._it = iter(self.loader)
        try:
            return next(self._it)
        except StopIteration:  # wrap around: the next epoch
            self._it = iter(self.loader)
            return next(self._it)

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)
        self._it = None


def val_batches(data_dir: Path, seq_len: int, micro_batch_size: int, max_batches: int):
    """Up to `max_batches` validation micro-batches of this rank, in order (nothing if there is no val split)."""
    from litdata import StreamingDataLoader

    split = Path(data_dir) / "val"
    if not (split / "index.json").is_file():
        return
    dataset = _dataset(split, seq_len + 1, shuffle=False, seed=0, drop_last=True)
    loader = StreamingDataLoader(dataset, batch_size=micro_batch_size, num_workers=0)
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        yield batch
