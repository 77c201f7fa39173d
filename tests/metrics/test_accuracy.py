import math

import pytest
import torch

from iclgd.metrics.accuracy import (
    accuracy,
    full_vocab_accuracy,
    label_predictions,
    label_scores,
    label_word_accuracy,
    majority_accuracy,
    token_logprobs,
)


def test_token_logprobs_matches_log_softmax():
    logits = torch.tensor([[[0.0, math.log(3.0)], [math.log(4.0), 0.0]]])
    targets = torch.tensor([[1, 1]])
    assert torch.allclose(token_logprobs(logits, targets), torch.tensor([[math.log(0.75), math.log(0.2)]]))


def test_sum_and_mean_scoring_of_multi_token_labels_hand_computed():
    # candidate 0: one token, log p = -1.0; candidate 1: two tokens, -0.6 and -0.6 (sum -1.2, mean -0.6)
    logprobs = torch.tensor([[[-1.0, 99.0], [-0.6, -0.6]]])
    lengths = torch.tensor([1, 2])
    assert label_scores(logprobs, lengths, "sum")[0].tolist() == pytest.approx([-1.0, -1.2])
    assert label_scores(logprobs, lengths, "mean")[0].tolist() == pytest.approx([-1.0, -0.6])
    assert label_predictions(label_scores(logprobs, lengths, "sum")).tolist() == [0]
    assert label_predictions(label_scores(logprobs, lengths, "mean")).tolist() == [1]


def test_label_word_accuracy_hand_computed():
    scores = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.5, 0.4]])
    assert label_word_accuracy(scores, torch.tensor([1, 0, 0, 1])) == 0.5


def test_full_vocab_accuracy_can_fall_below_chance():
    logits = torch.tensor([[0.0, 5.0, 1.0, 0.0], [0.0, 1.0, 2.0, 9.0], [0.0, 1.0, 3.0, 0.0]])
    gold = torch.tensor([1, 2, 2])  # candidates are tokens 1 and 2; token 3 wins example 1
    assert full_vocab_accuracy(logits, gold) == pytest.approx(2 / 3)
    assert full_vocab_accuracy(logits[1:2], gold[1:2]) == 0.0  # below the 1/2 chance of two labels


def test_label_scores_rejects_bad_lengths():
    with pytest.raises(ValueError):
        label_scores(torch.zeros(1, 2, 2), torch.tensor([0, 1]))


def test_accuracy_of_predictions():
    assert accuracy(torch.tensor([1, 0, 2, 2]), torch.tensor([1, 1, 2, 0])) == 0.5


def test_majority_accuracy_is_the_share_of_the_most_frequent_label():
    from iclgd.metrics import majority_accuracy

    assert majority_accuracy(torch.tensor([0, 2, 2, 1, 2])) == pytest.approx(3 / 5)
    assert majority_accuracy(torch.tensor([1, 1])) == 1.0


def test_a_row_with_a_nan_score_predicts_nothing_and_counts_wrong():
    # torch's argmax takes NaN for the largest value: a diverged model's all-NaN row would "predict" label 0
    nan = float("nan")
    scores = torch.tensor([[nan, nan], [0.1, nan], [0.9, 0.1]])
    assert label_predictions(scores).tolist() == [-1, -1, 0]
    assert label_word_accuracy(scores, torch.tensor([0, 0, 0])) == pytest.approx(1 / 3)
    logits = torch.tensor([[nan, nan, nan], [0.0, 2.0, 1.0]])
    assert full_vocab_accuracy(logits, torch.tensor([0, 1])) == 0.5


def test_mismatched_or_empty_labels_are_errors_and_lists_are_read():
    with pytest.raises(ValueError, match=r"predictions \[3\] and gold \[2\]"):
        accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="not empty"):
        accuracy(torch.tensor([]), torch.tensor([]))
    with pytest.raises(ValueError, match="at least one label"):
        majority_accuracy(torch.tensor([], dtype=torch.long))
    assert accuracy([0, 1, 1], [0, 1, 0]) == pytest.approx(2 / 3)
    assert majority_accuracy([1, 1, 0]) == pytest.approx(2 / 3)
