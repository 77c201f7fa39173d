"""A small GPT-2 pretrained by iclgd itself, offline, on synthetic corpora where in-context learning emerges.

    corpora: icc (in-context classification, default), icc-exemplars (its inputs latent, shown as exemplars),
             ginc (Xie et al. 2022), markov (Edelman et al. 2024)
    pretrain(load_config(None, corpus="icc"), "models/icc")            # resumable, bit-reproducible on CPU
    icl_curve("src/iclgd/assets/icc-gpt2", "icc-heldout")               # accuracy vs k, trained and untrained
"""
