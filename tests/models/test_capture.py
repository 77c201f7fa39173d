"""Captures and cached-prefix passes against stock transformers (eager attention, whole sequences), every family.

Tolerance: 1e-5 absolute in fp32 (observed differences are below 1e-6).
"""

from __future__ import annotations

import pytest
import torch

from iclgd.models.capture import CaptureRequest, encode_prefix, forward, recording
from iclgd.models.families import FAMILIES
from iclgd.models.loading import loaded
from iclgd.models.tiny import tiny_model

FAMILY_NAMES = tuple(family.name for family in FAMILIES)
ATOL = 1e-5
PREFIX_LEN = 12
LENGTHS = (5, 3, 8, 6)
TEST_START = (1, 0, 2, 3)
DEMO_INDEX = (0, 3, 7, 9, 10, 11)


def _random_ids(n: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(4, vocab, (n,), generator=generator)


def _check_against_stock(lm, reference, prefix_ids, queries, right_padded) -> None:
    """Batched pass (on a cached prefix, or none) == stock whole-sequence pass, for logits and every capture."""
    ids, mask = right_padded(queries)
    analysis = torch.tensor([len(q) - 1 for q in queries])
    start = torch.tensor(TEST_START[: len(queries)])
    offset = 0 if prefix_ids is None else len(prefix_ids)
    prefix = None if prefix_ids is None else encode_prefix(lm, prefix_ids)
    demo_index = None if prefix is None else torch.tensor(DEMO_INDEX)
    request = CaptureRequest(analysis_index=analysis, test_start=start, demo_key_index=demo_index)
    logits, capture = forward(lm, ids, mask, prefix=prefix, request=request)
    at_analysis, _ = forward(lm, ids, mask, prefix=prefix, logits_at=analysis[:, None])
    n_layers = lm.n_layers
    assert capture.presoftmax_logits.shape[:3] == (len(queries), n_layers, lm.config.num_attention_heads)
    for row, query in enumerate(queries):
        sequence = query if prefix_ids is None else torch.cat([prefix_ids, query])
        full_logits, weights, attention_outputs = reference.run(sequence)
        torch.testing.assert_close(logits[row, : len(query)], full_logits[offset:], atol=ATOL, rtol=0)
        a, s = offset + int(analysis[row]), offset + int(start[row])
        torch.testing.assert_close(at_analysis[row, 0], full_logits[a], atol=ATOL, rtol=0)
        n_test = a - s + 1
        assert int(capture.test_length[row]) == n_test
        for layer in range(n_layers):
            torch.testing.assert_close(capture.attention_output[row, layer], attention_outputs[layer][a],
                                       atol=ATOL, rtol=0)
            w = weights[layer][:, a, s : a + 1]  # stock post-softmax weights to the test tokens [H, n]
            m = capture.presoftmax_logits[row, layer, :, :n_test]
            visible = w > 0
            assert int(capture.masked_keys[row, layer]) == int((~visible[0]).sum())
            assert torch.all(m[~visible] == 0)
            assert torch.all(capture.presoftmax_logits[row, layer, :, n_test:] == 0)
            # The logits the model feeds its softmax: log w = m - logsumexp(row), a constant per head.
            shift = torch.where(visible, m - w.clamp_min(1e-30).log(), torch.nan)
            row_constant = shift.nanmean(-1)
            spread = (shift - row_constant[:, None]).nan_to_num(0).abs().max()
            assert spread < ATOL, f"layer {layer}: m - log w varies by {spread}"
            if prefix is not None:
                w_demo = weights[layer][:, a, demo_index]  # [H, N]
                seen = w_demo[0] > 0
                expected = (w_demo.clamp_min(1e-30).log() + row_constant[:, None]).sum(0)
                torch.testing.assert_close(capture.demo_logits[row, layer][seen], expected[seen], atol=1e-4, rtol=0)


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_cached_prefix_batch_equals_stock_full_sequences(family_name, stock_reference, right_padded):
    model, tokenizer = tiny_model(family_name, seed=3)
    lm = loaded(model, tokenizer, name=family_name)
    generator = torch.Generator().manual_seed(0)
    prefix_ids = _random_ids(PREFIX_LEN, len(tokenizer), generator)
    queries = [_random_ids(n, len(tokenizer), generator) for n in LENGTHS]
    _check_against_stock(lm, stock_reference(family_name, seed=3), prefix_ids, queries, right_padded)


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_batch_without_prefix_equals_stock(family_name, stock_reference, right_padded):
    model, tokenizer = tiny_model(family_name, seed=4)
    lm = loaded(model, tokenizer, name=family_name)
    generator = torch.Generator().manual_seed(1)
    queries = [_random_ids(n, len(tokenizer), generator) for n in LENGTHS]
    _check_against_stock(lm, stock_reference(family_name, seed=4), None, queries, right_padded)


@pytest.mark.parametrize(("family_name", "local"), [("gpt_neo", 1), ("gemma3", 1), ("gemma2", 0), ("phi3", None)])
def test_windowed_layers_mask_test_keys(family_name, local, right_padded):
    """A local / sliding layer (window 4) hides test keys 4+ positions back: they are 0 and counted (on a cached
    prefix too). ``local``: the one windowed layer (None: every layer)."""
    model, tokenizer = tiny_model(family_name, seed=0)
    lm = loaded(model, tokenizer, name=family_name)
    ids, mask = right_padded([torch.arange(10, 20)])
    windowed = [local is None or layer == local for layer in range(lm.n_layers)]
    for prefix in (None, encode_prefix(lm, torch.arange(20, 26))):
        _, capture = forward(lm, ids, mask, prefix=prefix, request=CaptureRequest(torch.tensor([9]), torch.tensor([0])))
        assert capture.masked_keys[0].tolist() == [6 if w else 0 for w in windowed]  # keys 0..5 are out
        for layer, w in enumerate(windowed):
            assert torch.all((capture.presoftmax_logits[0, layer, :, :6] == 0) == w)
            assert torch.all(capture.presoftmax_logits[0, layer, :, 6:] != 0)


def test_gemma2_soft_caps_bite_and_are_applied(right_padded):
    """The tiny Gemma 2's caps (scores 2, logits 3) change the stock model's output, and iclgd's logits and captured
    scores are those of the capped model: |scores| < 2 and far from those of the same weights without caps."""
    model, tokenizer = tiny_model("gemma2", seed=3)
    lm = loaded(model, tokenizer, name="gemma2")
    generator = torch.Generator().manual_seed(0)
    prefix_ids = _random_ids(PREFIX_LEN, len(tokenizer), generator)
    query = _random_ids(8, len(tokenizer), generator)
    ids, mask = right_padded([query])
    request = CaptureRequest(torch.tensor([7]), torch.tensor([0]))
    logits, capture = forward(lm, ids, mask, prefix=encode_prefix(lm, prefix_ids), request=request)
    scores = capture.presoftmax_logits
    assert scores.abs().max() < 2.0 and scores.abs().max() > 1.0  # in tanh's bend, not its linear part
    assert logits.abs().max() < 3.0

    uncapped, _ = tiny_model("gemma2", seed=3, config_overrides={"attn_logit_softcapping": None,
                                                                 "final_logit_softcapping": None})
    capped = tiny_model("gemma2", seed=3)[0]
    sequence = torch.cat([prefix_ids, query])[None]
    with torch.no_grad():
        stock = capped(sequence).logits[0, PREFIX_LEN:]
        plain = uncapped(sequence).logits[0, PREFIX_LEN:]
        uncapped.config.final_logit_softcapping = 3.0  # the attention cap alone
        attention_only = uncapped(sequence).logits[0, PREFIX_LEN:]
    torch.testing.assert_close(logits[0], stock, atol=ATOL, rtol=0)
    assert (logits[0] - plain).abs().max() > 0.1
    assert (logits[0] - attention_only).abs().max() > 1e-3


def test_demo_logits_and_queries_are_consistent():
    """demo_logits = Σ_h analysis_query_h · k_h (GQA: query head h uses key head h // 2); all_queries holds it."""
    model, tokenizer = tiny_model("llama", seed=0)
    lm = loaded(model, tokenizer, name="llama")
    prefix = encode_prefix(lm, torch.arange(4, 24))
    demo_index = torch.tensor([1, 5, 19])
    request = CaptureRequest(torch.tensor([3]), torch.tensor([0]), demo_index, all_queries=True)
    _, capture = forward(lm, torch.arange(30, 35)[None], torch.ones(1, 5, dtype=torch.long), prefix=prefix,
                         request=request)
    heads, kv_heads = lm.config.num_attention_heads, lm.config.num_key_value_heads
    for layer in range(lm.n_layers):
        q = capture.analysis_query[0, layer].view(heads, -1)
        k = prefix.keys[layer][0][torch.arange(heads) // (heads // kv_heads)][:, demo_index]  # [H, N, D]
        torch.testing.assert_close(capture.demo_logits[0, layer], torch.einsum("hd,hnd->n", q, k), atol=1e-5, rtol=0)
        torch.testing.assert_close(capture.all_queries[0, layer, 3], capture.analysis_query[0, layer])


def _layer_deltas(family_name: str) -> list[float]:
    """|m_ICL − m_ZS| / |m_ZS| per layer over the test tokens, for one test example behind 20 demo tokens."""
    model, tokenizer = tiny_model(family_name, seed=0)
    lm = loaded(model, tokenizer, name=family_name)
    bos = torch.tensor([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else [], dtype=torch.long)
    generator = torch.Generator().manual_seed(2)
    demos, test = _random_ids(20, len(tokenizer), generator), _random_ids(6, len(tokenizer), generator)
    prefix = encode_prefix(lm, torch.cat([bos, demos]))
    ones = torch.ones(1, 6, dtype=torch.long)
    _, icl = forward(lm, test[None], ones, prefix=prefix, request=CaptureRequest(torch.tensor([5]), torch.tensor([0])))
    zs_ids = torch.cat([bos, test])[None]
    n_bos = len(bos)
    _, zs = forward(lm, zs_ids, torch.ones_like(zs_ids),
                    request=CaptureRequest(torch.tensor([5 + n_bos]), torch.tensor([n_bos])))
    m_icl, m_zs = icl.presoftmax_logits[0], zs.presoftmax_logits[0]
    return [float((m_icl[i] - m_zs[i]).norm() / m_zs[i].norm()) for i in range(lm.n_layers)]


@pytest.mark.parametrize("family_name", ["llama", "mistral", "qwen2", "gpt_neox", "gptj", "phi3", "gemma2", "gemma3"])
def test_layer0_structural_zero_in_rotary_families(family_name):
    """SimAM_Δ structural zero: with RoPE, layer 0's logits over the test tokens depend only on token ids and
    relative offsets, so m_ICL == m_ZS (below the 1e-6 relative tolerance of metrics.md); not at layer 1."""
    deltas = _layer_deltas(family_name)
    assert deltas[0] < 1e-6
    assert deltas[1] > 1e-3


def test_no_structural_zero_with_absolute_positions():
    """GPT-2 adds absolute position embeddings before layer 0, so its layer-0 logits move with the prefix."""
    assert _layer_deltas("gpt2")[0] > 1e-3


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
def test_gradients_through_recording_equal_stock(family_name, stock_reference):
    """Finetuning runs the model inside `recording`: loss and every gradient equal the stock eager model's."""
    model, tokenizer = tiny_model(family_name, seed=5)
    lm = loaded(model, tokenizer, name=family_name)
    reference = stock_reference(family_name, seed=5).model
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(4, len(tokenizer), (2, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    lm.model.requires_grad_(True)
    reference.requires_grad_(True)
    request = CaptureRequest(torch.tensor([8, 5]), torch.tensor([0, 0]), all_queries=True)
    with recording(lm, request) as buffer:
        loss = lm.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
    reference_loss = reference(input_ids=ids, attention_mask=mask, labels=labels).loss
    reference_loss.backward()
    torch.testing.assert_close(loss, reference_loss, atol=1e-6, rtol=0)
    reference_parameters = dict(reference.named_parameters())
    for name, parameter in lm.model.named_parameters():
        torch.testing.assert_close(parameter.grad, reference_parameters[name].grad, atol=1e-5, rtol=1e-4, msg=name)
    capture = buffer.capture
    assert capture.all_queries.shape[:3] == (2, lm.n_layers, 9)
    torch.testing.assert_close(capture.all_queries[1, :, 5], capture.analysis_query[1])
    assert not capture.all_queries.requires_grad


def test_recording_splits_forward_passes():
    model, tokenizer = tiny_model("gpt2", seed=0)
    lm = loaded(model, tokenizer, name="gpt2")
    request = CaptureRequest(torch.tensor([2]), torch.tensor([0]))
    with torch.no_grad(), recording(lm, request) as buffer:
        for start in (10, 20, 30):
            lm.model(input_ids=torch.arange(start, start + 4)[None])
    assert len(buffer.captures) == 3
    assert not torch.equal(buffer.captures[0].attention_output, buffer.captures[1].attention_output)


def test_prepared_model_without_session_is_stock(stock_reference):
    model, tokenizer = tiny_model("mistral", seed=7)
    lm = loaded(model, tokenizer, name="mistral")
    ids = torch.arange(5, 25)[None]
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, stock_reference("mistral", seed=7).model(ids).logits,
                                   atol=ATOL, rtol=0)


def test_bad_requests_are_refused():
    model, tokenizer = tiny_model("gpt2", seed=0)
    lm = loaded(model, tokenizer, name="gpt2")
    ids, mask = torch.arange(4, 10).view(2, 3), torch.tensor([[1, 1, 1], [1, 1, 0]])
    with pytest.raises(ValueError, match="analysis_index"):  # row 1 has 2 tokens
        forward(lm, ids, mask, request=CaptureRequest(torch.tensor([2, 2]), torch.tensor([0, 0])))
    with pytest.raises(ValueError, match="test_start"):
        forward(lm, ids, mask, request=CaptureRequest(torch.tensor([2, 0]), torch.tensor([0, 1])))
    with pytest.raises(ValueError, match="needs a prefix"):
        forward(lm, ids, mask, request=CaptureRequest(torch.tensor([2, 1]), torch.tensor([0, 0]), torch.tensor([0])))


def test_fused_prefix_attention_equals_the_explicit_merge():
    """The fused CPU kernel on the prefix block, merged by log-sum-exp, gives the explicit path's output: GQA (9
    heads on 3), left padding, a fully padded row (the prefix alone answers), and a batch of one."""
    from iclgd.models.attention import _attend_with_prefix, _attend_with_prefix_fused, fused_prefix_applies

    generator = torch.Generator().manual_seed(0)
    for batch, q_len in ((5, 7), (1, 4)):
        query = torch.randn(batch, 9, q_len, 16, generator=generator)
        key, value = (torch.randn(batch, 3, q_len, 16, generator=generator) for _ in range(2))
        prefix_key, prefix_value = (torch.randn(1, 3, 11, 16, generator=generator) for _ in range(2))
        lengths = torch.tensor([q_len, 3, 0, q_len - 1, 1][:batch])
        real = torch.arange(q_len)[None, :] >= (q_len - lengths)[:, None]
        mask = torch.ones(q_len, q_len, dtype=torch.bool).tril()[None, None] & real[:, None, None, :]
        with torch.no_grad():
            assert fused_prefix_applies(query, key, value, None, None, 0.0)
            fused = _attend_with_prefix_fused(query, key, value, mask, prefix_key, prefix_value, 0.25)
        explicit = _attend_with_prefix(query, key, value, mask, prefix_key, prefix_value, 0.25, None, 0.0, False)
        assert torch.isfinite(fused).all()
        torch.testing.assert_close(fused, explicit, atol=1e-6, rtol=0)


def test_fused_prefix_attention_only_where_it_is_exact():
    """Gradients, a soft cap, a window into the prefix, dropout and non-fp32 tensors keep the explicit path."""
    from iclgd.models.attention import fused_prefix_applies

    q, k, v = (torch.randn(1, 2, 3, 4) for _ in range(3))
    window = torch.ones(3, 5, dtype=torch.bool)
    assert fused_prefix_applies(q, k, v, None, None, 0.0)
    assert not fused_prefix_applies(q.requires_grad_(), k, v, None, None, 0.0)
    q = q.detach()
    assert not fused_prefix_applies(q, k, v, window, None, 0.0)
    assert not fused_prefix_applies(q, k, v, None, 50.0, 0.0)
    assert not fused_prefix_applies(q, k, v, None, None, 0.1)
    assert not fused_prefix_applies(q.bfloat16(), k.bfloat16(), v.bfloat16(), None, None, 0.0)


SHORT_QUERIES_SCRIPT = """
import sys, torch
from iclgd.models.capture import CaptureRequest, encode_prefix, forward
from iclgd.models.loading import loaded
from iclgd.models.tiny import tiny_model

model, tokenizer = tiny_model(sys.argv[1], seed=0)
lm = loaded(model, tokenizer, name=sys.argv[1])
prefix = encode_prefix(lm, torch.arange(10, 40))
queries = [[41, 42], [43], [44, 45, 46], [47, 48]]  # 1 to 3 tokens: one alone makes products of 1 to 3 rows

def run(batch):
    width = max(len(queries[i]) for i in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    for row, i in enumerate(batch):
        ids[row, :len(queries[i])] = torch.tensor(queries[i])
        mask[row, :len(queries[i])] = 1
    end = torch.tensor([len(queries[i]) - 1 for i in batch])
    request = CaptureRequest(analysis_index=end, test_start=torch.zeros_like(end))
    logits, capture = forward(lm, ids, mask, prefix=prefix, request=request, logits_at=end[:, None])
    return logits[:, 0], capture.attention_output, capture.analysis_query

together = run([0, 1, 2, 3])
alone = [run([i]) for i in range(4)]
print(all(torch.equal(torch.cat([a[part] for a in alone]), together[part]) for part in range(3)))
"""


@pytest.mark.parametrize("family_name", ["llama", "gpt2"])
def test_short_queries_alone_or_batched_are_the_same_bits_in_mkl_strict_mode(family_name):
    """Queries of 1 to 3 tokens, one per pass or four in one: in MKL's strict mode the logits and captures are the
    same bits. Some CPUs keep a row's bits in strict mode only for products of at least 4 rows, so strict-mode
    passes pad the block and the unembedding to EXACT_MIN_ROWS rows (masked positions, zero rows)."""
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", SHORT_QUERIES_SCRIPT, family_name], capture_output=True, text=True,
                          env={**os.environ, "MKL_CBWR": "AUTO,STRICT", "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "True"


def test_strict_mode_padding_is_invisible_to_the_caller(monkeypatch):
    """The masked positions strict mode adds to a short block change no shape and no value the caller sees (beyond
    the rounding of products of more rows)."""
    import iclgd.models.capture as capture_module

    model, tokenizer = tiny_model("llama", seed=0)
    lm = loaded(model, tokenizer, name="llama")
    ids, mask = torch.tensor([[41, 42, 43]]), torch.ones(1, 3, dtype=torch.long)

    def run():
        request = CaptureRequest(analysis_index=torch.tensor([2]), test_start=torch.tensor([0]), all_queries=True)
        return forward(lm, ids, mask, request=request)

    logits, capture = run()
    monkeypatch.setattr(capture_module, "BATCH_EXACT", True)
    padded_logits, padded = run()
    assert padded_logits.shape == logits.shape == (1, 3, lm.config.vocab_size)
    assert padded.all_queries.shape == capture.all_queries.shape and capture.all_queries.shape[2] == 3
    torch.testing.assert_close(padded_logits, logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(padded.all_queries, capture.all_queries, atol=ATOL, rtol=0)
    torch.testing.assert_close(padded.attention_output, capture.attention_output, atol=ATOL, rtol=0)
