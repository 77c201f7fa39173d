"""The induction circuit's progress measures against hand-computed attention."""

import pytest
import torch

from iclgd.metrics.circuits import attention_mass, previous_token_score


def _causal_uniform(batch: int, heads: int, length: int) -> torch.Tensor:
    """Each query attends uniformly to itself and every earlier position."""
    rows = torch.tril(torch.ones(length, length))
    return (rows / rows.sum(-1, keepdim=True)).expand(batch, heads, length, length).clone()


def test_previous_token_score_by_hand():
    attention = _causal_uniform(2, 2, 4)  # row t: 1 / (t + 1) on each of 0..t
    # head 1 of batch 1 becomes a perfect previous-token head
    attention[1, 1] = torch.tensor([[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.float)
    score = previous_token_score(attention, torch.tensor([2, 3]))
    uniform = (1 / 3 + 1 / 4) / 2
    assert score.tolist() == pytest.approx([uniform, (uniform + 1) / 2])
    perfect = torch.zeros(1, 1, 5, 5)
    perfect[0, 0, 0, 0] = 1
    perfect[0, 0, torch.arange(1, 5), torch.arange(0, 4)] = 1
    assert previous_token_score(perfect, torch.arange(1, 5)).tolist() == [1.0]


def test_attention_mass_by_hand():
    attention = _causal_uniform(2, 1, 5)  # the query (position 4) puts 0.2 on each position
    keys = torch.tensor([[False, True, False, True, False], [False, False, False, False, False]])
    # batch 0: two keys, 0.4; batch 1: no key, 0 (not NaN); mean over the batch 0.2
    assert attention_mass(attention, -1, keys).tolist() == pytest.approx([0.2])
    everything = torch.ones(2, 5, dtype=torch.bool)
    assert attention_mass(attention, 4, everything).tolist() == pytest.approx([1.0])  # rows sum to 1


def test_bad_arguments():
    attention = _causal_uniform(1, 1, 3)
    with pytest.raises(ValueError, match="positions >= 1"):
        previous_token_score(attention, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="keys mask"):
        attention_mass(attention, -1, torch.ones(1, 4, dtype=torch.bool))
