import pytest
import torch

from iclgd.finetune.gd import (
    finetune_full_batch,
    finetune_gd,
    lm_loss,
    restore,
    snapshot,
    swap_in,
    trainable_slices,
)
from iclgd.finetune.lr_search import (
    DAI_LR_GRID,
    HALF_DECADE_GRID,
    halving_search,
    no_signal,
    published_lr,
    published_seed,
    race_grid,
    search_grid,
    search_lr,
)
from iclgd.finetune.trajectories import gd_trajectories, supports_batched_trajectories
from iclgd.metrics.output_distribution import order_sensitivity

from .conftest import make_model, make_sequences

ORDERS = ([0, 1, 2, 3], [3, 1, 0, 2], [2, 3, 1, 0])


def _next_token_distributions(model, tensors, prompts):
    original = snapshot(model)
    swap_in(model, tensors)
    with torch.no_grad():
        p = torch.stack([torch.softmax(model(input_ids=ids[None]).logits[0, -1].double(), -1) for ids in prompts])
    restore(model, original)
    return p


def test_full_batch_gd_is_order_invariant_and_batch_one_sgd_is_not(gpt2):
    demos = make_sequences(gpt2, n=4)
    prompts = make_sequences(gpt2, n=3, seed=9)
    runs = {}
    for name, fn in (("full", finetune_full_batch), ("sgd", finetune_gd)):
        runs[name] = [fn(gpt2, [demos[i] for i in order], lr=2.0) for order in ORDERS]
    for other in runs["full"][1:]:  # bit for bit: a step sums its sequences in a canonical order
        for key, tensor in runs["full"][0].tensors.items():
            assert torch.equal(tensor, other.tensors[key])
    differences = [float((runs["sgd"][0].tensors[k] - runs["sgd"][1].tensors[k]).abs().max())
                   for k in runs["sgd"][0].tensors]
    assert max(differences) > 1e-3
    sen = {name: order_sensitivity(torch.stack([_next_token_distributions(gpt2, r.tensors, prompts) for r in rs]))
           for name, rs in runs.items()}
    assert sen["full"] == 0.0 and sen["sgd"] > 1e-3


def test_full_batch_step_uses_the_mean_loss(gpt2):
    demos = make_sequences(gpt2, n=3)
    result = finetune_full_batch(gpt2, demos, lr=0.1)
    with torch.no_grad():
        mean_loss = sum(float(lm_loss(gpt2, d[None])) for d in demos) / 3
    assert result.losses == [pytest.approx(mean_loss, rel=1e-6)]


def test_dai_grid():
    assert len(DAI_LR_GRID) == 36 and DAI_LR_GRID == tuple(sorted(DAI_LR_GRID))
    assert 3e-3 in DAI_LR_GRID and 0.9 in DAI_LR_GRID and 1e-4 in DAI_LR_GRID and 0.08 in DAI_LR_GRID
    assert 0.2 in DAI_LR_GRID and 1.6e-4 not in DAI_LR_GRID  # the published 1.6e-4 was off the grid


def test_search_grid_picks_the_best_and_the_smaller_on_ties():
    assert search_grid(lambda lr: -abs(lr - 3e-3)).lr == 3e-3
    result = search_grid(lambda lr: 1.0 if lr in (0.02, 0.5) else 0.0)
    assert result.lr == 0.02 and len(result.scores) == 36
    lr, scores, _, _ = search_grid(lambda lr: lr, grid=(0.1, 0.3))
    assert lr == 0.3 and scores == {0.1: 0.1, 0.3: 0.3}


def test_a_search_where_every_point_scores_the_same_has_no_signal(capsys):
    """All 36 points at 0.5 (an untrained model): the tie rule picks 1e-4, and compare says so."""
    from iclgd.experiments.compare import _flat

    flat = search_grid(lambda lr: 0.5)
    assert flat.lr == 1e-4 and no_signal(flat)
    assert not no_signal(search_grid(lambda lr: 1.0 if lr == 0.02 else 0.5))
    assert not no_signal(search_grid(lambda lr: 0.5, grid=(0.1,)))  # one point: nothing to compare
    source = _flat(flat, "search on Dai's grid")
    assert source == "search on Dai's grid; every point scored as the smallest did, so the smallest lr by the tie rule"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lr 0.0001 is the smallest by the tie rule" in err and "--lr" in err
    assert _flat(search_grid(lambda lr: lr), "x") == "x" and capsys.readouterr().err == ""


def test_search_lr_scores_trained_tensors_and_leaves_the_model_unchanged(gpt2):
    demos, held_out = make_sequences(gpt2, n=3), make_sequences(gpt2, n=2, seed=5)
    before = snapshot(gpt2)
    seen = []

    def score(tensors):  # accuracy stand-in: minus the held-out loss with the trained tensors swapped in
        original = snapshot(gpt2)
        swap_in(gpt2, tensors)
        with torch.no_grad():
            value = -sum(float(lm_loss(gpt2, s[None])) for s in held_out)
        restore(gpt2, original)
        return value

    result = search_lr(gpt2, demos, score, grid=(1e-4, 1e-1, 9.0), on_point=lambda lr, a: seen.append(lr))
    assert seen == [1e-4, 1e-1, 9.0] and result.lr == max(result.scores, key=result.scores.get)
    assert all(torch.equal(before[k], v) for k, v in snapshot(gpt2).items())


def _table_search(right: dict[float, list[int]], chunk_rows: int, max_bytes: int = 2 << 30):
    """race_grid over a table of which rows each lr labels right; returns (search, lrs trained, chunks scored)."""
    trained, scored = [], []

    def train(lr):
        trained.append(lr)
        return {"lr": torch.tensor([lr], dtype=torch.float64)}

    def correct(tensors, rows):
        lr = float(tensors["lr"])
        scored.append((lr, rows.start, rows.stop))
        return sum(right[lr][i] for i in rows)

    n_rows = len(next(iter(right.values())))
    search = race_grid(train, correct, n_rows, grid=tuple(right), chunk_rows=chunk_rows, max_bytes=max_bytes)
    return search, trained, scored


def test_race_grid_by_hand():
    """3 lrs, 6 rows in chunks of 2; the order of work and the choice worked out by hand."""
    right = {
        0.1: [1, 0, 1, 1, 1, 1],  # 5 right
        0.2: [1, 1, 1, 1, 1, 0],  # 5 right: ties 0.1 in the end; 0.1 wins as the smaller lr
        0.3: [0, 0, 1, 1, 1, 1],  # 4 right
    }
    search, trained, scored = _table_search(right, chunk_rows=2)
    # the least (errors so far, lr) goes next: (0, .1) scores [0,2) -> (1, .1); (0, .2) scores [0,2), [2,4)
    # without errors and [4,6) with one -> (1, .2), all scored; (0, .3) scores [0,2) -> (2, .3); (1, .1) scores
    # [2,4), [4,6) without errors -> (1, .1), all scored and the least: below (1, .2) and (2, .3), so it wins
    assert scored == [(0.1, 0, 2), (0.2, 0, 2), (0.2, 2, 4), (0.2, 4, 6), (0.3, 0, 2), (0.1, 2, 4), (0.1, 4, 6)]
    assert trained == [0.1, 0.2, 0.3]
    assert search.lr == 0.1 and search.lr == search_grid(lambda lr: sum(right[lr]), grid=tuple(right)).lr
    assert search.rows == {0.1: 6, 0.2: 6, 0.3: 2} and search.scores == {0.1: 5 / 6, 0.2: 5 / 6, 0.3: 0.0}
    assert not no_signal(search)
    # room for one lr's tensors only: 0.1 is dropped when 0.2 is trained, and trained again for its last chunks
    tight, retrained, rescored = _table_search(right, chunk_rows=2, max_bytes=8)
    assert tight == search and rescored == scored and retrained == [0.1, 0.2, 0.3, 0.1]


def test_race_grid_takes_each_lr_once():
    right = {0.1: [0, 1], 0.2: [1, 1]}
    assert race_grid(lambda lr: {"lr": torch.tensor([lr], dtype=torch.float64)},
                     lambda t, rows: sum(right[float(t["lr"])][i] for i in rows), 2, grid=(0.1, 0.1, 0.2)).lr == 0.2


def test_race_grid_skips_every_lr_above_a_winner_without_errors():
    right = {lr: [1] * 10 if lr == 3e-3 else [1] * 9 + [0] for lr in DAI_LR_GRID}
    search, trained, _ = _table_search(right, chunk_rows=4)
    assert search.lr == 3e-3 and trained == [lr for lr in DAI_LR_GRID if lr <= 3e-3]
    assert set(search.scores) == set(trained) and not no_signal(search)


@pytest.mark.parametrize("seed", range(40))
def test_race_grid_picks_what_scoring_every_lr_on_every_row_picks(seed):
    """Random tables (small grids and rows, so ties are common; some lrs near perfect, some near chance)."""
    rng = torch.Generator().manual_seed(seed)
    n_lrs, n_rows = int(torch.randint(1, 9, (1,), generator=rng)), int(torch.randint(1, 30, (1,), generator=rng))
    rates = torch.rand(n_lrs, generator=rng)
    right = {round(0.01 * (i + 1), 2): (torch.rand(n_rows, generator=rng) < rates[i]).int().tolist()
             for i in range(n_lrs)}
    chunk_rows = int(torch.randint(1, 8, (1,), generator=rng))
    search, trained, scored = _table_search(right, chunk_rows)
    assert search.lr == search_grid(lambda lr: sum(right[lr]) / n_rows, grid=tuple(right)).lr
    assert search.rows[search.lr] == n_rows and search.scores[search.lr] == sum(right[search.lr]) / n_rows
    assert len(scored) == len(set(scored)) and len(trained) == len(set(trained))  # no chunk twice, no retraining
    for lr, seen in search.rows.items():  # each score is over the rows it was scored on
        assert search.scores[lr] == sum(right[lr][:seen]) / seen
    # with no room to keep tensors, lrs are retrained when revisited: the same work and choice
    tight, retrained, rescored = _table_search(right, chunk_rows, max_bytes=0)
    assert tight == search and rescored == scored and set(retrained) == set(trained)


def test_race_grid_where_every_lr_labels_alike_has_no_signal(capsys):
    from iclgd.experiments.compare import _flat

    same = [1, 0, 1, 1, 0, 1, 0, 1]
    search, trained, _ = _table_search(dict.fromkeys((0.1, 0.2, 0.3), same), chunk_rows=3)
    assert search.lr == 0.1 and trained == [0.1, 0.2, 0.3] and no_signal(search)
    assert _flat(search, "x") == "x; every point scored as the smallest did, so the smallest lr by the tie rule"
    assert "lr 0.1 is the smallest by the tie rule" in capsys.readouterr().err
    _flat(search, "x", unit="models/run/step-000250 on icc-heldout")  # a sweep's unit says which it is
    assert capsys.readouterr().err.startswith("warning: models/run/step-000250 on icc-heldout: every learning rate")
    differ = dict.fromkeys((0.1, 0.2, 0.3), same) | {0.3: [0, 0, 1, 1, 0, 1, 1, 1]}
    assert not no_signal(_table_search(differ, chunk_rows=3)[0])
    with pytest.raises(ValueError, match="held-out rows"):
        race_grid(lambda lr: {}, lambda t, rows: 0, 0)
    with pytest.raises(ValueError, match="chunks of at least one row"):
        race_grid(lambda lr: {}, lambda t, rows: 0, 5, chunk_rows=0)
    with pytest.raises(ValueError, match="3 rows right of the 2 scored"):
        race_grid(lambda lr: {}, lambda t, rows: 3, 5, chunk_rows=2)


def test_published_table():
    assert published_lr("KoboldAI/fairseq-dense-1.3B", "sst2") == 5e-4
    assert published_lr("2.7B", "agnews") == 0.2
    assert published_lr("/models/fairseq-dense-2.7B/", "cb") == 1e-2
    assert published_lr("gpt2", "sst2") is None and published_lr("1.3B", "rte") is None
    assert published_seed("KoboldAI/fairseq-dense-2.7B", "sst2") == 7
    assert published_seed("1.3B", "subj") == 4


@pytest.mark.parametrize("family", ["gpt2", "llama", "opt", "gpt_neox", "phi3", "gemma3"])
def test_batched_trajectories_equal_dai_gd_at_each_lr(family):
    """One batched pass of trajectories = finetune_gd at each lr, to rounding; fused Q slices untouched."""
    model = make_model(family)
    demos, lrs = make_sequences(model, n=4), [1e-3, 3e-2, 0.5]
    before = snapshot(model)
    assert supports_batched_trajectories(model)
    for lr, got in zip(lrs, gd_trajectories(model, demos, lrs), strict=True):
        want = finetune_gd(model, demos, lr).tensors
        scale = max(float((want[k] - before[k].float()).abs().max()) for k in want)
        assert scale > 0 and want.keys() == got.keys()
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-4 * scale + 1e-6)  # + rounding of W
    for s in trainable_slices(model):  # a fused projection's Q slice stays exactly the original
        if s.mask is not None:
            assert torch.equal(got[s.name][~s.mask], before[s.name].float()[~s.mask])
    assert all(torch.equal(before[k], v) for k, v in snapshot(model).items())


def test_half_decade_grid_is_dais_grid_at_mantissas_1_and_3():
    assert HALF_DECADE_GRID == (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)
    assert set(HALF_DECADE_GRID) <= set(DAI_LR_GRID)


def test_halving_search_by_hand():
    """4 lrs, 8 rows, first rung 2 rows: rungs of 2, 4 rows; the survivors and the winner worked out by hand."""
    right = {  # which held-out rows each lr's model labels right
        0.1: [1, 1, 0, 0, 0, 0, 0, 0],
        0.2: [1, 1, 1, 1, 1, 1, 1, 1],
        0.3: [1, 1, 1, 0, 1, 1, 1, 1],
        0.4: [0, 0, 1, 1, 1, 1, 1, 1],
    }
    trained_lrs, scored = [], []

    def train(lrs):
        trained_lrs.extend(lrs)
        return [{"lr": torch.tensor(lr)} for lr in lrs]

    def correct(tensors, rows):
        lr = round(float(tensors["lr"]), 6)
        scored.append((lr, rows.start, rows.stop))
        return sum(right[lr][i] for i in rows)

    result = halving_search(train, correct, n_rows=8, grid=(0.4, 0.3, 0.2, 0.1), first_rows=2)
    assert trained_lrs == [0.1, 0.2, 0.3, 0.4]
    # rows [0, 2): 0.1, 0.2, 0.3 score 2, 0.4 scores 0 -> keep 0.1, 0.2 (ties to the smaller lr)
    # rows [2, 4): 0.1 -> 2/4, 0.2 -> 4/4 -> keep 0.2: one left, done
    assert scored == [(0.1, 0, 2), (0.2, 0, 2), (0.3, 0, 2), (0.4, 0, 2), (0.1, 2, 4), (0.2, 2, 4)]
    assert result.lr == 0.2 and result.rows == {0.1: 4, 0.2: 4, 0.3: 2, 0.4: 2}
    assert result.scores == {0.1: 0.5, 0.2: 1.0, 0.3: 1.0, 0.4: 0.0}


def test_halving_search_stops_at_the_rows_it_has():
    result = halving_search(lambda lrs: [{} for _ in lrs], lambda t, rows: len(rows), n_rows=3,
                            grid=(1e-3, 1e-2, 1e-1), first_rows=25)
    assert result.lr == 1e-3 and result.rows == {1e-3: 3, 1e-2: 3, 1e-1: 3}  # all tie on the 3 rows: smallest
    assert no_signal(result)


def test_halving_search_has_signal_where_an_lr_ruled_out_ends_at_the_winners_fraction():
    """C and D lose on rows 0-24 (15 right against 20); A and B then score 10 of rows 25-49: every fraction ends at
    0.6, but C and D were beaten, so the choice is measured, not the tie rule's."""
    right = {1: 20, 2: 20, 3: 15, 4: 15}

    def correct(tensors, rows):
        return right[tensors["lr"]] if rows.start == 0 else 10

    result = halving_search(lambda lrs: [{"lr": lr} for lr in lrs], correct, n_rows=50, grid=(1, 2, 3, 4),
                            first_rows=25)
    assert set(result.scores.values()) == {0.6} and result.lr == 1 and not no_signal(result)


def test_batched_trajectories_in_chunks_equal_one_batch():
    """Under a memory cap the trajectories run in chunks (here one each): the same tensors, to rounding."""
    model = make_model("llama")
    demos, lrs = make_sequences(model, n=3), [1e-3, 1e-2, 1e-1]
    together, one_by_one = gd_trajectories(model, demos, lrs), gd_trajectories(model, demos, lrs, max_bytes=1)
    for a, b in zip(together, one_by_one, strict=True):
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
