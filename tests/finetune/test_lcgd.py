import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from iclgd.finetune.gd import finetune_gd, lm_loss, trainable_slices
from iclgd.finetune.lcgd import finetune_lcgd, layer_causal_loss

from .conftest import make_model, make_sequences


def _three_layer_gpt2(seed: int = 0):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=40, n_positions=32, n_embd=16, n_layer=3, n_head=2, initializer_range=0.1)
    return GPT2LMHeadModel(config).eval()


def _layer(name: str) -> int:
    return int(name.split(".h.")[1].split(".")[0])


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama", "opt-350m", "phi3", "gemma2", "gemma3"])
def test_without_detaching_and_last_term_only_lcgd_equals_gd(family):
    """LCGD reads out through the model's own readout (OPT-350m: no final norm, project_out; Gemma 2: final cap)."""
    model = make_model(family)
    if family == "opt-350m":
        assert model.model.decoder.final_layer_norm is None and model.model.decoder.project_out is not None
    sequences = make_sequences(model, n=3)
    gd = finetune_gd(model, sequences, lr=0.5)
    last = model.config.num_hidden_layers - 1
    lcgd = finetune_lcgd(model, sequences, lr=0.5, detach=False, layers=[last])
    for name, tensor in gd.tensors.items():
        assert torch.equal(tensor, lcgd.tensors[name]), name
    assert gd.losses == lcgd.losses


def test_last_term_value_equals_gd_loss_even_when_detached(gpt2):
    ids = make_sequences(gpt2, n=1)[0][None]
    with torch.no_grad():
        assert float(layer_causal_loss(gpt2, ids, layers=[1])) == pytest.approx(float(lm_loss(gpt2, ids)), abs=1e-6)
        total = float(layer_causal_loss(gpt2, ids))
        parts = [float(layer_causal_loss(gpt2, ids, layers=[l])) for l in range(2)]
    assert total == pytest.approx(sum(parts), rel=1e-6)


@pytest.mark.parametrize("readout", ["block", "attention"])
def test_with_detaching_a_layer_gradient_does_not_depend_on_layers_above(readout):
    sequences = [make_sequences(make_model("gpt2"), n=1, seed=3)[0] % 40]
    model = _three_layer_gpt2()
    base = finetune_lcgd(model, sequences, lr=1.0, readout=readout)
    perturbed_model = _three_layer_gpt2()
    with torch.no_grad():  # perturb the K/V of layer 2 (above layers 0 and 1)
        for s in trainable_slices(perturbed_model):
            if _layer(s.name) == 2:
                s.parameter.add_(0.3 * torch.randn_like(s.parameter) * s.mask)
    perturbed = finetune_lcgd(perturbed_model, sequences, lr=1.0, readout=readout)
    for name, tensor in base.tensors.items():
        if _layer(name) < 2:
            assert torch.equal(tensor, perturbed.tensors[name]), name
    assert torch.equal(base.grad_norms[:, :2], perturbed.grad_norms[:, :2])
    assert not torch.equal(base.grad_norms[:, 2], perturbed.grad_norms[:, 2])

    # GD, by contrast, backpropagates through the layers above: its layer-0 update changes
    gd = finetune_gd(_three_layer_gpt2(), sequences, lr=1.0)
    gd_perturbed = finetune_gd(perturbed_model, sequences, lr=1.0)
    assert not torch.equal(gd.tensors["transformer.h.0.attn.c_attn.weight"],
                           gd_perturbed.tensors["transformer.h.0.attn.c_attn.weight"])


def test_lcgd_differs_from_gd_and_trains_every_layer(gpt2):
    sequences = make_sequences(gpt2, n=2)
    gd = finetune_gd(gpt2, sequences, lr=0.5)
    lcgd = finetune_lcgd(gpt2, sequences, lr=0.5)
    assert bool((lcgd.grad_norms > 0).all())
    assert not torch.equal(gd.tensors["transformer.h.0.attn.c_attn.weight"],
                           lcgd.tensors["transformer.h.0.attn.c_attn.weight"])
    attention = finetune_lcgd(gpt2, sequences, lr=0.5, readout="attention")
    assert not torch.equal(attention.tensors["transformer.h.0.attn.c_attn.weight"],
                           lcgd.tensors["transformer.h.0.attn.c_attn.weight"])


def test_paper_variant_steps_once_per_token_on_its_prefix(gpt2):
    """lcgd-paper: one SGD step per demo token t >= 1, on Σ_l −log p_l(x_t | x_<t) read out at the attention output.
    Hand-built: the same steps as explicit prefixes through the loop with the last-token loss."""
    from iclgd.finetune import finetune
    from iclgd.finetune.gd import train
    from iclgd.finetune.lcgd import PAPER_LOSS, token_steps

    sequences = make_sequences(gpt2, n=2, min_len=4, max_len=6)
    assert [len(s) for s in token_steps(sequences)] == [t + 1 for s in sequences for t in range(1, len(s))]
    paper = finetune(gpt2, sequences, 0.5, method="lcgd-paper", label_lengths=[1, 1])
    assert paper.grad_norms.shape == (sum(len(s) - 1 for s in sequences), 2)
    prefixes = [s[: t + 1] for s in sequences for t in range(1, len(s))]
    by_hand = train(gpt2, prefixes, 0.5, loss_fn=PAPER_LOSS)
    for name, tensor in paper.tensors.items():
        assert torch.equal(tensor, by_hand.tensors[name]), name

    # Each step's loss is the last token's alone: on a prefix [x0, x1] it is the whole-demo loss of that prefix
    ids = sequences[0][:2][None]
    with torch.no_grad():
        assert float(PAPER_LOSS(gpt2, ids)) == pytest.approx(float(layer_causal_loss(gpt2, ids, readout="attention")),
                                                             abs=1e-6)
        longer = sequences[0][None]
        last = sum(float(torch.nn.functional.cross_entropy(
            _attention_logits(gpt2, longer, layer)[0, -2], longer[0, -1])) for layer in range(2))
        assert float(PAPER_LOSS(gpt2, longer)) == pytest.approx(last, abs=1e-5)
    # It trains every layer, differently from the released code's LCGD (block readout, one step per demo)
    code = finetune_lcgd(gpt2, sequences, lr=0.5)
    assert bool((paper.grad_norms > 0).all())
    assert not torch.equal(code.tensors["transformer.h.0.attn.c_attn.weight"],
                           paper.tensors["transformer.h.0.attn.c_attn.weight"])


def _attention_logits(model, ids, layer):
    """Logits of one layer's attention output through the final norm and the unembedding (the paper's readout)."""
    captured = {}
    handle = model.transformer.h[layer].attn.register_forward_hook(lambda m, a, out: captured.update(h=out[0]))
    try:
        model(input_ids=ids)
    finally:
        handle.remove()
    return model.lm_head(model.transformer.ln_f(captured["h"]))
