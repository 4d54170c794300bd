"""The training stream: endless epochs over LitData windows, and an exact position after `load_state_dict`."""

from __future__ import annotations

import pytest

from proxlab.pretrain.data import TrainData, data_info


def _take(data: TrainData, n: int) -> list[tuple[int, tuple[int, ...]]]:
    out = []
    for _ in range(n):
        batch = data.next()
        out.append((data.epoch, tuple(batch[:, 0].tolist())))
    return out


@pytest.mark.parametrize("cut", [1, 7, 0, -1])  # mid-epoch, at the last batch of an epoch, at the first of the next
def test_resume_position_is_exact_across_epochs(tokenized, cut):
    ref = TrainData(tokenized, 64, 32, seed=7)
    per_epoch = ref.batches_per_epoch
    total = 2 * per_epoch + 5
    expected = _take(ref, total)
    assert {e for e, _ in expected} == {1, 2, 3}  # wraps around
    assert expected[0][1] != expected[per_epoch][1]  # reshuffled per epoch
    k = {1: 1, 7: 7, 0: per_epoch, -1: per_epoch + 1}[cut]
    first = TrainData(tokenized, 64, 32, seed=7)
    head = _take(first, k)
    second = TrainData(tokenized, 64, 32, seed=7)
    second.load_state_dict(first.state_dict())
    assert head + _take(second, total - k) == expected


def test_data_info_errors(tmp_path, tokenized):
    assert data_info(tokenized)["seq_len"] == 64
    with pytest.raises(FileNotFoundError, match="not a tokenize artifact"):
        data_info(tmp_path)
