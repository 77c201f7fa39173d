"""The interpolated model: per-layer average of (W_KᵀW_Q, P W_V), invariant to the layer's rescaling symmetry."""

import torch

from iclgd.synthetic.linreg.construction import hand_built_gd, hand_built_gd_plus_plus
from iclgd.synthetic.linreg.interpolate import interpolate, layer_products
from iclgd.synthetic.linreg.lsa import LSA


def _predict(model, tasks):
    return model(tasks.x, tasks.y, tasks.x_query)


def test_interpolating_a_model_with_itself_keeps_it(tasks64):
    built = hand_built_gd(4, 1, 6, eta=2.0, steps=3)  # recurrent
    assert torch.allclose(_predict(interpolate(built, built), tasks64), _predict(built, tasks64), atol=1e-12)
    separate = hand_built_gd_plus_plus(4, 1, 6, [2.0, 1.0], [0.3, 0.0])
    assert interpolate(separate, separate) is None  # K > 1 separate layers: not defined, as in the official code


def test_rescaled_copy_interpolates_to_the_original(tasks64):
    """W_K·c and P/c give the same function; normalising M_KQ's x-block diagonal undoes c."""
    built = hand_built_gd(4, 1, 6, eta=2.0)
    rescaled = hand_built_gd(4, 1, 6, eta=2.0)
    with torch.no_grad():
        rescaled.W_K[0].mul_(-3.0)
        rescaled.P[0].div_(-3.0)
    assert torch.allclose(_predict(rescaled, tasks64), _predict(built, tasks64), atol=1e-12)
    assert torch.allclose(_predict(interpolate(rescaled, built), tasks64), _predict(built, tasks64), atol=1e-12)


def test_interpolation_is_the_average_of_the_products():
    trained = LSA(4, 1, 6, layers=1, positional_encoding=True, pe_size=2, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.normal_(0, 1.0, generator=gen)
    built = hand_built_gd(4, 1, 6, eta=2.0)
    middle = interpolate(trained, built)
    key_query, projected_value = layer_products(trained, 0, normalise=True)
    built_kq, built_pv = layer_products(built, 0)
    kq, pv = layer_products(middle, 0)
    assert torch.allclose(kq[:5, :5], (key_query[:5, :5] + built_kq) / 2)
    assert torch.allclose(pv[:5, :5], (projected_value[:5, :5] + built_pv) / 2)
    assert torch.allclose(kq[5:], key_query[5:] / 2)  # the positional rows: half the trained ones
    assert interpolate(LSA(4, 1, 6, softmax=True, dtype=torch.float64), built) is None


def test_a_recurrent_run_is_interpolated_with_gd_whose_one_layer_it_shares(tasks64):
    """A recurrent trained model equal to K steps of GD interpolates to GD itself: it is averaged with GD's one
    shared layer, not with GD++'s K different layers (which left a model worse than both ends)."""
    from iclgd.synthetic.linreg.baselines import line_search_eta
    from iclgd.synthetic.linreg.compare import reference_models

    eta, _ = line_search_eta(tasks64, 2)
    trained = hand_built_gd(4, 1, 6, eta=eta, steps=2)  # recurrent, as a --recurrent run is: GD's own weights
    models, _ = reference_models(trained, tasks64, fit_iterations=20)
    assert torch.allclose(_predict(models["interpolated"], tasks64), _predict(trained, tasks64), atol=1e-9)
