import pytest
import torch

from iclgd.errors import UserError
from iclgd.finetune import finetune
from iclgd.finetune.gd import (
    finetune_gd,
    lm_loss,
    restore,
    snapshot,
    swap_in,
    train,
    trainable_slices,
)
from iclgd.models.loading import loaded

from .conftest import make_model, make_sequences


def _state(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "phi3"])
def test_fused_projection_trains_k_and_v_and_keeps_q_bit_identical(family):
    model = make_model(family)
    before = _state(model)
    result = finetune_gd(model, make_sequences(model), lr=0.5)
    slices = {s.name: s for s in trainable_slices(model)}
    assert set(result.tensors) == set(slices)  # every layer's fused projection (weight, and bias where it has one)
    assert len({name.rsplit(".", 1)[0] for name in slices}) == model.config.num_hidden_layers
    for name, tensor in result.tensors.items():
        mask = slices[name].mask
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor[~mask], before[name][~mask])  # Q slice bit-identical
        assert not torch.equal(tensor[mask], before[name][mask])  # K/V trained
    swap_in(model, result.tensors)
    after = _state(model)
    for name in before:
        if name not in result.tensors:
            assert torch.equal(after[name], before[name])


@pytest.mark.parametrize("family", ["llama", "gemma2", "gemma3"])
def test_separate_projections_train_only_k_and_v(family):
    model = make_model(family)
    before = _state(model)
    result = finetune_gd(model, make_sequences(model), lr=0.5)
    assert result.tensors and all(".k_proj." in n or ".v_proj." in n for n in result.tensors)
    assert len(result.tensors) == 2 * model.config.num_hidden_layers  # no biases in these families
    assert all(not torch.equal(t, before[n]) for n, t in result.tensors.items())


def test_only_kv_require_grad_during_training_and_flags_are_restored(gpt2):
    names = {s.name for s in trainable_slices(gpt2)}
    seen = []

    def spy_loss(model, input_ids, n_label):
        seen.append({n for n, p in model.named_parameters() if p.requires_grad})
        assert not model.training
        return lm_loss(model, input_ids)

    gpt2.train()
    gpt2.requires_grad_(True)
    train(gpt2, make_sequences(gpt2, n=2), 0.1, loss_fn=spy_loss)
    assert seen == [names, names]
    assert gpt2.training and all(p.requires_grad and p.grad is None for p in gpt2.parameters())


@pytest.mark.parametrize("family", ["gpt2", "phi3", "gemma2", "gemma3"])
def test_gd_equals_a_hand_written_loop_with_torch_sgd(family):
    """K/V-only SGD == torch.optim.SGD on the stock model's own loss (Gemma 2: its soft caps; Phi-3: fused q/k/v)."""
    model = make_model(family)
    sequences = make_sequences(model, n=3)
    lr = 0.3
    result = finetune_gd(model, sequences, lr=lr)
    reference = make_model(family)
    slices = trainable_slices(reference)
    reference.requires_grad_(False)
    params = [s.parameter for s in slices]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=0.0)
    for ids in sequences:  # batch 1, one step per demo, in order
        optimizer.zero_grad()
        reference(input_ids=ids[None], labels=ids[None]).loss.backward()  # HF's own shifted mean NLL
        for s in slices:
            if s.mask is not None:
                s.parameter.grad.mul_(s.mask)
        optimizer.step()
    for s in slices:
        assert torch.allclose(result.tensors[s.name], s.parameter.detach(), rtol=0, atol=1e-6)
    assert len(result.losses) == 3


def test_model_is_left_unchanged_and_restore_is_bit_exact(gpt2):
    before = _state(gpt2)
    original = snapshot(trainable_slices(gpt2))
    result = finetune_gd(gpt2, make_sequences(gpt2), lr=1.0)
    assert all(torch.equal(p, before[n]) for n, p in gpt2.named_parameters())
    swap_in(gpt2, result.tensors)
    assert any(not torch.equal(p, before[n]) for n, p in gpt2.named_parameters())
    restore(gpt2, original)
    assert all(torch.equal(p, before[n]) for n, p in gpt2.named_parameters())


def test_gradient_norms_per_step_and_layer(gpt2):
    sequences = make_sequences(gpt2, n=3)
    result = finetune_gd(gpt2, sequences, lr=0.1)
    assert result.grad_norms.shape == (3, 2)
    slices = trainable_slices(gpt2)
    params = [s.parameter for s in slices]
    for p in params:
        p.requires_grad_(True)
    grads = torch.autograd.grad(lm_loss(gpt2, sequences[0][None]), params)
    for layer in range(2):
        squared = sum(
            (g * s.mask).square().sum() for s, g in zip(slices, grads, strict=True) if f".h.{layer}." in s.name
        )
        assert result.grad_norms[0, layer] == pytest.approx(float(squared.sqrt()), rel=1e-5)


def test_recorded_queries_come_from_the_step_that_saw_each_token(gpt2):
    sequences = make_sequences(gpt2, n=2)
    result = finetune_gd(gpt2, sequences, lr=1.0, record_queries=True, bos_length=1)
    n_tokens = sum(len(s) - 1 for s in sequences)
    assert result.train_queries.shape == (2, n_tokens, 32)
    assert torch.equal(result.train_tokens, torch.cat([s[1:] for s in sequences]))

    # reference: stock GPT-2 (eager), q = c_attn(ln_1(x))[..., :d] / sqrt(d_head), at the weights of that step
    def stock_queries(tensors, ids):
        model = make_model("gpt2")
        if tensors:
            swap_in(model, tensors)
        out = []
        hooks = [b.attn.c_attn.register_forward_hook(lambda m, a, o: out.append(o[0, :, :32] / 8**0.5))
                 for b in model.transformer.h]
        with torch.no_grad():
            model(input_ids=ids[None])
        for h in hooks:
            h.remove()
        return torch.stack(out)[:, 1:]

    after_first = finetune_gd(make_model("gpt2"), sequences[:1], lr=1.0).tensors
    expected = torch.cat([stock_queries(None, sequences[0]), stock_queries(after_first, sequences[1])], dim=1)
    assert torch.allclose(result.train_queries, expected, atol=1e-5)
    second = len(sequences[0]) - 1
    assert not torch.allclose(result.train_queries[1, second:], stock_queries(None, sequences[1])[1], atol=1e-4)


def test_same_result_through_a_loaded_model_and_with_dropout_requested(gpt2):
    sequences = make_sequences(gpt2)
    plain = finetune_gd(gpt2, sequences, lr=0.2)
    other = make_model("gpt2")
    other.train()  # dropout must be off during finetuning anyway
    via_loaded = finetune_gd(loaded(other, None, name="tiny"), sequences, lr=0.2, record_queries=True, bos_length=1)
    for name, tensor in plain.tensors.items():
        assert torch.allclose(tensor, via_loaded.tensors[name], rtol=0, atol=1e-6)


def test_bf16_model_keeps_fp32_trained_tensors():
    model = make_model("llama").to(torch.bfloat16)
    original = snapshot(model)
    result = finetune_gd(model, make_sequences(model, n=2), lr=1e-4)
    kept, swallowed_by_bf16 = 0, 0
    for name, tensor in result.tensors.items():
        assert tensor.dtype == torch.float32
        moved = tensor != original[name].float()
        kept += int(moved.sum())
        swallowed_by_bf16 += int((moved & (tensor.to(torch.bfloat16) == original[name])).sum())
    assert kept > 0 and swallowed_by_bf16 > 0  # updates bf16 would have rounded away are kept
    # ... and the result says how much of the update the bf16 model itself loses: by hand, over every tensor
    lost = sum(float((t.to(torch.bfloat16).float() - t).double().square().sum()) for t in result.tensors.values())
    moved = sum(float((t - original[n].float()).double().square().sum()) for n, t in result.tensors.items())
    assert result.update_rounding_error == pytest.approx((lost / moved) ** 0.5, rel=1e-9)
    assert 0.5 < result.update_rounding_error <= 1.5  # lr 1e-4: most of the update is below bf16's resolution


def test_fp32_model_loses_nothing_of_its_update():
    model = make_model("llama")
    assert finetune_gd(model, make_sequences(model, n=2), lr=1e-4).update_rounding_error == 0.0


def test_bad_inputs():
    model = make_model("gpt2")
    with pytest.raises(UserError):
        finetune_gd(model, make_sequences(model), lr=0.0)
    with pytest.raises(UserError):
        finetune_gd(model, [torch.tensor([0])], lr=0.1)
    with pytest.raises(UserError):
        finetune(model, make_sequences(model), 0.1, method="adam")
    with pytest.raises(KeyError):
        swap_in(model, {"no.such.weight": torch.zeros(1)})


def test_dispatcher_runs_both_methods_and_reports_steps(gpt2):
    sequences = make_sequences(gpt2, n=3)
    for method in ("gd", "lcgd"):
        steps: list[int] = []
        result = finetune(gpt2, sequences, 0.1, method=method, on_step=lambda steps=steps: steps.append(1))
        assert len(steps) == 3 and result.grad_norms.shape == (3, 2) and len(result.losses) == 3


def test_bad_training_settings_name_themselves(gpt2):
    sequences = make_sequences(gpt2, n=2)
    with pytest.raises(UserError, match=r"epochs must be at least 1, got 0"):
        train(gpt2, sequences, 0.1, epochs=0)
    with pytest.raises(UserError, match=r"batch must be at least 1 \(or None for the full batch\), got 0"):
        train(gpt2, sequences, 0.1, batch=0)
    with pytest.raises(UserError, match=r"learning rate must be positive, got 0: pass lr > 0"):
        train(gpt2, sequences, 0)
