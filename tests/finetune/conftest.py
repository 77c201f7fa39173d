import pytest
import torch

from iclgd.models.tiny import tiny_model

# OPT-350m's shape: embeddings of 16 projected to width 32 (project_in/project_out), post-LN (no final layer norm).
OPT_350M = {"word_embed_proj_dim": 16, "do_layer_norm_before": False}
SHAPES = {"opt-350m": ("opt", OPT_350M)}


def make_model(family: str = "gpt2", seed: int = 0):
    """A tiny model of a family, or of a named shape of one (``"opt-350m"``)."""
    family, overrides = SHAPES.get(family, (family, {}))
    model, _ = tiny_model(family, seed=seed, config_overrides=overrides)
    return model


def make_sequences(model, n: int = 4, seed: int = 0, min_len: int = 5, max_len: int = 9) -> list[torch.Tensor]:
    """Random demo sequences [BOS] tokens..., each a 1-D LongTensor."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=g).tolist()
    return [torch.cat([torch.tensor([0]), torch.randint(1, vocab, (t - 1,), generator=g)]) for t in lengths]


@pytest.fixture
def gpt2():
    return make_model("gpt2")
