"""FT methods as data: names, what each trains, the exact updates, and restoring exactly what was trained."""

import pytest
import torch

from iclgd.errors import UserError
from iclgd.finetune import FTMethod, finetune, label_loss, parse_method, trainable_slices
from iclgd.models.families import family_of, projection_parameters

from .conftest import make_model, make_sequences


def _state(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("name, expected", [
    ("gd", FTMethod("gd")),
    ("lcgd", FTMethod("lcgd", loss="layer_causal")),
    ("kv-sgd", FTMethod("kv-sgd")),
    ("whole-gd-label", FTMethod("whole-gd-label", "whole", None, "label", "sgd", None)),
    ("wv:middle-adam-label@1e-4", FTMethod("wv:middle-adam-label@1e-4", "wv", "middle", "label", "adam", None, 1e-4)),
    ("wv:3-sgd2", FTMethod("wv:3-sgd2", "wv", "3", "demo", "sgd", 2)),
    ("whole-adam4-demo", FTMethod("whole-adam4-demo", "whole", None, "demo", "adam", 4)),
])
def test_parse_method(name, expected):
    assert parse_method(name) == expected


@pytest.mark.parametrize("name, message", [
    ("adam", "unknown FT method"),
    ("all-gd", "unknown parameter set 'all'"),
    ("wv-gd", "wv needs a layer"),
    ("whole:3-gd", "whole takes no layer"),
    ("wv:top-gd", "unknown layer 'top'"),
    ("kv-rmsprop", "unknown optimizer 'rmsprop'"),
    ("kv-gd2", "gd is full batch"),
    ("kv-sgd0", "at least 1"),
    ("kv-sgd-tokens", "unknown loss 'tokens'"),
    ("kv-sgd@fast", "not a learning rate"),
    ("whole-adam-label@", "'' is not a learning rate"),  # not "no learning rate ... @@<lr>"
    ("kv-sgd@-1", "positive"),
])
def test_bad_method_names(name, message):
    with pytest.raises(UserError, match=message):
        parse_method(name)


def test_layer_out_of_range_is_refused(gpt2):
    with pytest.raises(UserError, match="trains layer 5, but the model has 2 layers"):
        finetune(gpt2, make_sequences(gpt2), 0.1, method="wv:5-gd")


@pytest.mark.parametrize("method", ["gd", "lcgd", "whole-adam-label", "wv:deep-sgd2-label", "kv-gd-label"])
def test_restore_covers_exactly_what_the_method_trained(method):
    """During training only the method's tensors move; afterwards every parameter is back bit for bit."""
    model = make_model("gpt2")
    before = _state(model)
    sequences = make_sequences(model, n=4)
    seen = []

    def on_epoch(epoch):
        seen.append(epoch)
        now = _state(model)
        moved = {name for name in before if not torch.equal(now[name], before[name])}
        assert moved == set(result_names)

    spec = parse_method(method)
    result_names = [s.name for s in spec.slices(model)]
    result = finetune(model, sequences, 0.05, method=method, epochs=3, label_lengths=[1] * 4, on_epoch=on_epoch)
    assert seen == [1, 2, 3]
    assert set(result.tensors) == set(result_names)
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    # The next method starts from the original weights: a whole-model method leaks nothing.
    again = finetune(model, sequences, 0.05, method="gd")
    reference = finetune(make_model("gpt2"), sequences, 0.05, method="gd")
    assert all(torch.equal(again.tensors[n], reference.tensors[n]) for n in reference.tensors)


def test_wv_trains_only_the_value_columns_of_one_layer():
    model = make_model("gpt2")  # fused c_attn: [q | k | v] columns
    result = finetune(model, make_sequences(model), 0.5, method="wv:1-gd")
    (weight, bias) = projection_parameters(model, family_of(model), ("v",), [1])
    assert set(result.tensors) == {weight.name, bias.name} and ".h.1." in weight.name
    for s in (weight, bias):
        trained, original = result.tensors[s.name], s.parameter.detach()
        assert torch.equal(trained[~s.mask], original[~s.mask])
        assert not torch.equal(trained[s.mask], original[s.mask])
    assert parse_method("wv:middle-gd").resolve_layer(30) == 15 and parse_method("wv:deep-gd").resolve_layer(30) == 29


def _hf_label_loss(model, ids, n_label):
    labels = ids.clone()
    labels[: len(ids) - n_label] = -100  # HF shifts labels inside: the label tokens are the targets
    return model(input_ids=ids[None], labels=labels[None]).loss


@pytest.mark.parametrize("optimizer, batch, name", [("sgd", 1, "whole-sgd-label"), ("adam", None, "whole-adam-label"),
                                                    ("sgd", 2, "whole-sgd2-label")])
def test_whole_model_methods_equal_a_hand_written_torch_loop(optimizer, batch, name):
    """Whole-model SGD / Adam over 3 epochs on the label-token loss == torch.optim on HF's masked loss."""
    model = make_model("llama")
    sequences = make_sequences(model, n=4)
    label_lengths = [1, 2, 1, 2]
    lr, epochs = 0.01, 3
    result = finetune(model, sequences, lr, method=name, epochs=epochs, label_lengths=label_lengths)

    reference = make_model("llama")
    params = dict(reference.named_parameters())
    opt = (torch.optim.SGD(params.values(), lr=lr) if optimizer == "sgd" else torch.optim.Adam(params.values(), lr=lr))
    size = batch or len(sequences)
    for _ in range(epochs):
        for start in range(0, len(sequences), size):
            opt.zero_grad()
            chunk = range(start, min(start + size, len(sequences)))
            loss = sum(_hf_label_loss(reference, sequences[i], label_lengths[i]) for i in chunk) / len(chunk)
            loss.backward()
            opt.step()
    assert set(result.tensors) == set(params)
    # label_loss unembeds only the label positions, HF's loss every position: their logits differ by rounding,
    # which Adam's g / sqrt(v) lifts to ~lr * 1e-3 where a gradient is near zero
    atol = 2e-6 if optimizer == "sgd" else 1e-5
    for name_, p in params.items():
        torch.testing.assert_close(result.tensors[name_], p.detach(), rtol=0, atol=atol)
    assert len(result.losses) == epochs * -(-len(sequences) // size)


def test_label_loss_needs_label_lengths(gpt2):
    with pytest.raises(ValueError, match="label_lengths"):
        finetune(gpt2, make_sequences(gpt2), 0.1, method="kv-sgd-label")


def test_method_lr_overrides_the_units(gpt2):
    sequences = make_sequences(gpt2)
    named = finetune(gpt2, sequences, 0.9, method="kv-sgd@0.05")
    plain = finetune(gpt2, sequences, 0.05, method="gd")
    assert all(torch.equal(named.tensors[n], plain.tensors[n]) for n in plain.tensors)
    assert {s.name for s in trainable_slices(gpt2)} == set(plain.tensors)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3", "opt", "gpt_neox"])
def test_label_loss_unembeds_only_the_positions_predicting_the_label(family):
    """Shen's label-token loss == the NLL of the label tokens read off full logits, with the unembedding applied at
    n_label positions only (Gemma's 262k-token vocabulary makes the rest most of a step)."""
    model = make_model(family)
    ids = make_sequences(model, n=1, min_len=9, max_len=9)[0][None]
    rows = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, i, o: rows.append(i[0].shape[1]))
    for n_label in (1, 3):
        loss = label_loss(model, ids, n_label)
        full = model(input_ids=ids).logits[0]
        want = torch.nn.functional.cross_entropy(full[-n_label - 1:-1].float(), ids[0, -n_label:])
        torch.testing.assert_close(loss, want, rtol=1e-6, atol=1e-6)
    handle.remove()
    assert rows == [1, 9, 3, 9]  # label_loss: n_label rows; the full forward: all 9


def test_two_methods_on_one_layer_are_warned_and_a_layer_out_of_range_refused(capsys):
    """wv:middle and wv:deep are one layer of a 2-layer model: the same training twice, said once; on 30 layers
    they differ. A layer past the model is bad input."""
    middle, deep = parse_method("wv:middle-gd-label"), parse_method("wv:deep-gd-label")
    middle.check_layers([deep], 2)
    deep.check_layers([], 2)
    assert capsys.readouterr().err.count("train the same layer (1) of this 2-layer model") == 1
    middle.check_layers([deep], 30)
    assert "same layer" not in capsys.readouterr().err
    with pytest.raises(UserError, match="trains layer 9, but the model has 2 layers"):
        parse_method("wv:9-gd-label").check_layers([], 2)
