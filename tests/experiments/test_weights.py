"""Weight-space analyses (Shen et al.): sparsity read from the model's own modules, seeded noise restored bit for bit,
σ = 0 equal to the plain ICL accuracy, checkpoint series, and the CLI end to end."""

import json
import math
import sys

import pyarrow.parquet as pq
import pytest
import torch

from iclgd.errors import UserError
from iclgd.experiments.weights import (
    checkpoint_folders,
    checkpoint_series,
    noise_generator,
    perturbation,
    perturbed,
    weight_change,
    weight_matrices,
    weight_sparsity,
)
from iclgd.metrics.weights import THRESHOLDS, construction_sparsity
from iclgd.models.offline import SHIPPED_MODELS
from iclgd.models.tiny import save_tiny_model, tiny_model

SHIPPED = str(SHIPPED_MODELS["icc-gpt2"])
TINY_PRETRAIN = dict(steps=20, batch_size=4, n_embd=16, n_head=2, n_layer=2, n_positions=32, checkpoint_every=10,
                     log_every=10, keep_every=10, threads=1, warmup_steps=5)


def _rows(rows):
    return {(r.matrix, r.layer, r.threshold): r.sparsity for r in rows}


def test_sparsity_hand_computed_on_a_set_matrix():
    model, _ = tiny_model("llama")
    q = model.model.layers[0].self_attn.q_proj.weight  # (32, 32)
    with torch.no_grad():
        q.fill_(1.0)
        q[:8] = 5e-3  # a quarter of the entries below 1e-2, none below 1e-3
        q[:2] = 0.0  # 1/16 of them below every δ
    rows = _rows(weight_sparsity(model, thresholds=(1e-2, 1e-3)))
    assert rows[("W_Q", 0, 1e-2)] == 0.25
    assert rows[("W_Q", 0, 1e-3)] == 1 / 16
    assert rows[("W_Q", None, 1e-3)] == pytest.approx((1 / 16 + rows[("W_Q", 1, 1e-3)]) / 2)


@pytest.mark.parametrize("family_name", ["gpt2", "llama"])
def test_sparsity_equals_a_direct_count_on_the_module_weights(family_name):
    """GPT-2's fused Conv1D c_attn (in, 3d): W_Q, W_K, W_V are its column thirds; LLaMA's q/k/v_proj (GQA k, v)."""
    model, _ = tiny_model(family_name)
    d = model.config.hidden_size
    direct = {}
    for layer in range(model.config.num_hidden_layers):
        if family_name == "gpt2":
            fused = model.transformer.h[layer].attn.c_attn.weight
            matrices = {"W_Q": fused[:, :d], "W_K": fused[:, d:2 * d], "W_V": fused[:, 2 * d:]}
        else:
            attention = model.model.layers[layer].self_attn
            matrices = {"W_Q": attention.q_proj.weight, "W_K": attention.k_proj.weight,
                        "W_V": attention.v_proj.weight}
        for name, w in matrices.items():
            for delta in THRESHOLDS:
                direct[(name, layer, delta)] = (w.abs() < delta).sum().item() / w.numel()
    result = weight_sparsity(model)
    rows = _rows(result)
    assert len(rows) == 3 * 5 * (model.config.num_hidden_layers + 1)
    for key, value in direct.items():
        assert rows[key] == pytest.approx(value, abs=1e-12), key
    assert rows[("W_V", None, 1e-2)] == pytest.approx((direct[("W_V", 0, 1e-2)] + direct[("W_V", 1, 1e-2)]) / 2)
    assert 0.01 < rows[("W_Q", None, 1e-2)] < 0.5  # initializer_range 0.1: not degenerate
    need = construction_sparsity(d)
    assert {r.matrix: r.construction for r in result} == need


def test_weight_sets():
    gpt2, _ = tiny_model("gpt2")
    names = set(weight_matrices(gpt2, "all"))
    assert "transformer.wte.weight" in names and "lm_head.weight" not in names  # tied: once
    assert "transformer.h.1.mlp.c_fc.weight" in names and not any(n.endswith(".bias") or ".ln_" in n for n in names)
    blocks = set(weight_matrices(gpt2, "blocks"))
    assert blocks == {n for n in names if n.startswith("transformer.h.")}
    assert set(weight_matrices(gpt2, "qkv")) == {"transformer.h.0.attn.c_attn.weight",
                                                 "transformer.h.1.attn.c_attn.weight"}
    llama, _ = tiny_model("llama")
    assert len(weight_matrices(llama, "qkv")) == 3 * llama.config.num_hidden_layers
    with pytest.raises(UserError, match="unknown weight set"):
        weight_matrices(llama, "mlp")


def test_noise_is_seeded_by_seed_and_sigma_and_the_weights_come_back_bit_for_bit():
    model, _ = tiny_model("llama", seed=3)
    before = {name: t.clone() for name, t in model.state_dict().items()}
    matrices = weight_matrices(model, "all")
    n = sum(p.numel() for p in matrices.values())
    norm = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in matrices.values()))

    def noisy(seed, sigma):
        with perturbed(matrices, sigma, seed) as change:
            return {name: p.detach().clone() for name, p in matrices.items()}, change

    first, change = noisy(0, 1e-2)
    assert all(torch.equal(t, before[name]) for name, t in model.state_dict().items())  # restored
    assert not torch.equal(first["model.embed_tokens.weight"], before["model.embed_tokens.weight"])
    assert change.relative == pytest.approx(1e-2 * math.sqrt(n) / norm, rel=0.02)  # |ΔW|_F ≈ σ √n
    direct = weight_change(first, {name: before[name] for name in matrices})
    assert change == direct
    noisy(0, 3e-2)  # another σ drawn in between does not change the noise of (0, 1e-2)
    again, _ = noisy(0, 1e-2)
    assert all(torch.equal(again[name], first[name]) for name in first)
    other, _ = noisy(1, 1e-2)
    assert not torch.equal(other["model.embed_tokens.weight"], first["model.embed_tokens.weight"])
    assert noise_generator(0, 1e-2).initial_seed() != noise_generator(0, 1e-3).initial_seed()
    unchanged, zero = noisy(0, 0.0)
    assert zero.relative == 0.0 and all(torch.equal(unchanged[name], before[name]) for name in unchanged)
    with pytest.raises(RuntimeError, match="inside"), perturbed(matrices, 0.5, 0):
        raise RuntimeError("failed inside the block")
    assert all(torch.equal(t, before[name]) for name, t in model.state_dict().items())


def test_sigma_zero_is_the_unperturbed_icl_accuracy():
    from iclgd.experiments.compare import prepare_unit, select_rows
    from iclgd.experiments.config import CompareConfig
    from iclgd.experiments.passes import label_accuracy
    from iclgd.models.loading import load_model

    points, facts = perturbation(SHIPPED, "icc-heldout", k=4, sigmas=(0.3, 0.0), seeds=(1,), eval_size=40)
    cfg = CompareConfig(model=SHIPPED, task="icc-heldout", shots=4, seed=1, eval_size=40)
    lm = load_model(SHIPPED)
    prompts = prepare_unit(cfg, lm, select_rows(cfg), lr_search_rows=False, single_token_labels=False).prompts
    by = {(p.method, p.sigma): p for p in points}
    assert by[("icl", 0.0)].accuracy == label_accuracy(lm, prompts, with_demos=True)
    assert by[("zs", 0.0)].accuracy == label_accuracy(lm, prompts, with_demos=False)
    assert by[("icl", 0.0)].relative_change == 0.0 and by[("icl", 0.0)].true_k == 4
    assert by[("icl", 0.3)].relative_change > 1 and by[("icl", 0.3)].accuracy < by[("icl", 0.0)].accuracy
    assert facts["n_matrices"] == 10 and facts["eval_size"] == 40 and facts["chance"] == 0.5
    with pytest.raises(UserError, match=">= 0"):
        perturbation(SHIPPED, "icc-heldout", sigmas=(-1e-3,))


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory):
    from iclgd.synthetic.pretrain.config import load_config
    from iclgd.synthetic.pretrain.train import pretrain

    run = tmp_path_factory.mktemp("kept") / "run"
    pretrain(load_config(None, **TINY_PRETRAIN), run, progress=False)
    return run


def test_checkpoint_series(kept_run):
    from safetensors.torch import load_file

    folders = checkpoint_folders(kept_run)
    assert [step for step, _ in folders] == [0, 10, 20]
    assert checkpoint_folders(kept_run / "checkpoints") == folders
    points, sparsity_rows, facts = checkpoint_series(kept_run, "icc-heldout", k=4, seeds=(0,), reference="first",
                                                     eval_size=16)
    icl = {p.step: p for p in points if p.method == "icl"}
    assert set(icl) == {0, 10, 20} and {p.step for p in points if p.method == "zs"} == {0, 10, 20}
    assert icl[0].relative_change == 0.0 and facts["reference_step"] == 0
    first, last = (load_file(folder / "model.safetensors") for folder in (folders[0][1], folders[-1][1]))
    matrices = [name for name, t in first.items() if t.dim() >= 2]
    moved = sum(float((last[n].double() - first[n].double()).pow(2).sum()) for n in matrices)
    assert icl[20].relative_change == pytest.approx(math.sqrt(moved / sum(float(first[n].double().pow(2).sum())
                                                                            for n in matrices)))
    assert len(sparsity_rows) == 3 * 3 * 5 * (2 + 1) and {r["step"] for r in sparsity_rows} == {0, 10, 20}
    final, _, _ = checkpoint_series(kept_run, "icc-heldout", k=4, reference="final", eval_size=16)
    assert {p.step: p.relative_change for p in final}[20] == 0.0


def test_checkpoint_folders_refuse_what_is_not_a_series(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        checkpoint_folders(tmp_path / "missing")
    with pytest.raises(UserError, match="holds no checkpoints"):
        checkpoint_folders(tmp_path)
    killed = tmp_path / ".tmp-step-000010-host-123"  # a kept checkpoint whose write was killed
    killed.mkdir()
    (killed / "config.json").write_text("{}")
    with pytest.raises(UserError, match="holds no checkpoints"):
        checkpoint_folders(tmp_path)
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "config.json").write_text("{}")
    with pytest.raises(UserError, match="no step number"):
        checkpoint_folders(tmp_path)


def _cli(monkeypatch, capsys, *args):
    from iclgd.cli import main

    monkeypatch.setattr(sys, "argv", ["iclgd", "weights", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
        raise SystemExit(0)
    out = capsys.readouterr()
    assert exit_info.value.code == 0, out.err
    return out.out


def test_cli_end_to_end(tmp_path, kept_run, monkeypatch, capsys):
    tiny = save_tiny_model("gpt2", tmp_path / "tiny-gpt2")
    printed = _cli(monkeypatch, capsys, "sparsity", "--model", str(tiny), "--out", str(tmp_path / "s"))
    assert "construction" in printed and "W_V" in printed and "99.9" not in printed
    table = pq.read_table(tmp_path / "s" / "sparsity.parquet")
    assert table.num_rows == 3 * 5 * 3 and set(table.column_names) >= {"matrix", "layer", "threshold", "sparsity"}
    record = json.loads((tmp_path / "s" / "record.json").read_text())
    assert record["hidden_size"] == 32 and record["construction"]["W_V"] == construction_sparsity(32)["W_V"]
    assert json.loads(table.schema.metadata[b"iclgd"])["model"] == str(tiny)
    assert all((tmp_path / "s" / f"sparsity.{ext}").stat().st_size > 0 for ext in ("png", "pdf"))

    printed = _cli(monkeypatch, capsys, "perturb", "--model", "icc-gpt2", "--task", "icc-heldout", "-k", "4",
                   "--sigma", "0", "--sigma", "1e-2", "--eval-size", "20", "--weights", "qkv", "--no-progress",
                   "--out", str(tmp_path / "p"))
    assert "zero-shot" in printed and "1e-02" in printed
    rows = pq.read_table(tmp_path / "p" / "perturb.parquet").to_pylist()
    assert [(r["method"], r["sigma"]) for r in rows] == [("zs", 0.0), ("icl", 0.0), ("icl", 0.01)]
    record = json.loads((tmp_path / "p" / "record.json").read_text())
    assert record["weights"] == "qkv" and record["n_matrices"] == 2 and record["sigmas"] == [0.0, 0.01]
    assert record["seeds"] == [1] and 0.5 <= record["majority"] <= 1 and record["chance"] == 0.5
    assert (tmp_path / "p" / "perturb.png").is_file() and (tmp_path / "p" / "perturb.pdf").is_file()

    printed = _cli(monkeypatch, capsys, "checkpoints", "--run", str(kept_run), "--task", "icc-heldout", "-k", "4",
                   "--eval-size", "16", "--threshold", "1e-2", "--no-progress", "--out", str(tmp_path / "c"))
    assert "step 20" in printed
    points = pq.read_table(tmp_path / "c" / "checkpoints.parquet").to_pylist()
    assert sorted({p["step"] for p in points}) == [0, 10, 20]
    assert pq.read_table(tmp_path / "c" / "checkpoint-sparsity.parquet").num_rows == 3 * 3 * (2 + 1)
    assert {p.name for p in (tmp_path / "c").iterdir()} == {"checkpoints.parquet", "checkpoint-sparsity.parquet",
                                                           "record.json", "checkpoints.png", "checkpoints.pdf"}
