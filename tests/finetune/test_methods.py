"""FT methods as data: names, what each trains, the exact updates, and restoring exactly what was trained."""

import pytest
import torch

from iclgd.errors import UserError
from iclgd.finetune import FTMethod, finetune, parse_method, trainable_slices
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
    for name_, p in params.items():
        torch.testing.assert_close(result.tensors[name_], p.detach(), rtol=0, atol=2e-6)
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
