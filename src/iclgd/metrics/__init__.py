"""Metrics: pure functions on tensors, no I/O.

cosine            cos with zero handling, uniform layer averages
similarity        SimAOU (normalised and raw) and random baselines, SimAM, SimAM_Δ, α
kendall           Kendall τ between ICL demo-token logits and FT query similarities
rec2ftp           Rec2FTP and its chance baseline
draws             per-example seeded random draws of the baselines
bootstrap         percentile bootstrap CIs over examples
accuracy          label-word accuracy (sum/mean scoring), full-vocabulary accuracy
output_distribution  TO@K, OCS@K, KL, JS, order sensitivity
weights           sparsity at thresholds, the construction's sparsity, relative weight change
dual_form         GD on a linear layer as linear attention
"""

from iclgd.metrics.accuracy import (
    NO_PREDICTION,
    accuracy,
    full_vocab_accuracy,
    label_predictions,
    label_scores,
    label_word_accuracy,
    majority_accuracy,
    token_logprobs,
)
from iclgd.metrics.bootstrap import bootstrap_ci, bootstrap_ratio_ci, cluster_bootstrap_ci
from iclgd.metrics.cosine import Cosines, LayerAverage, average_cosines, cosine, layer_average
from iclgd.metrics.draws import example_seed, uniform_per_example
from iclgd.metrics.kendall import check_same_demo_tokens, ft_demo_logits, kendall, kendall_random
from iclgd.metrics.output_distribution import (
    OUTPUT_METRICS,
    RunningOrderSpread,
    js_divergence,
    js_divergence_logprobs,
    kl_divergence,
    kl_divergence_logprobs,
    order_pair_reference,
    order_pair_reference_per_example,
    order_sensitivity,
    order_sensitivity_per_example,
    overlap_cosine,
    token_overlap,
)
from iclgd.metrics.rec2ftp import Rec2FTP, rec2ftp
from iclgd.metrics.similarity import (
    alpha,
    simam,
    simam_before_ft,
    simam_delta,
    simaou,
    simaou_better_random,
    simaou_norm,
    simaou_random,
)
from iclgd.metrics.weights import construction_sparsity, layer_sparsity, relative_weight_change, sparsity

__all__ = [
    "Cosines",
    "LayerAverage",
    "Rec2FTP",
    "accuracy",
    "alpha",
    "bootstrap_ci",
    "cluster_bootstrap_ci",
    "bootstrap_ratio_ci",
    "average_cosines",
    "check_same_demo_tokens",
    "construction_sparsity",
    "cosine",
    "example_seed",
    "ft_demo_logits",
    "full_vocab_accuracy",
    "js_divergence",
    "js_divergence_logprobs",
    "kendall",
    "kendall_random",
    "kl_divergence",
    "kl_divergence_logprobs",
    "NO_PREDICTION",
    "label_predictions",
    "label_scores",
    "label_word_accuracy",
    "layer_average",
    "layer_sparsity",
    "majority_accuracy",
    "OUTPUT_METRICS",
    "RunningOrderSpread",
    "order_pair_reference",
    "order_pair_reference_per_example",
    "order_sensitivity",
    "order_sensitivity_per_example",
    "overlap_cosine",
    "rec2ftp",
    "relative_weight_change",
    "simam",
    "simam_before_ft",
    "simam_delta",
    "simaou",
    "simaou_better_random",
    "simaou_norm",
    "simaou_random",
    "sparsity",
    "token_logprobs",
    "token_overlap",
    "uniform_per_example",
]
