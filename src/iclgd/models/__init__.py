"""Models and hooks: the family table, loading and untrained variants, capture and the shared-prefix attention.

    families.py       the one table of architectures (paths, scaling, rotary, windows, soft caps, fused K/V, BOS/SEP)
    loading.py        load_model, loaded, make_untrained, prepare, LoadedModel
    capture.py        encode_prefix, forward, recording, Prefix, CaptureRequest, Capture, CaptureBuffer
    attention.py      the registered "iclgd" attention function (+ mask function): shared prefix, captures
    own_attention.py  forwards for GPT-Neo, GPT-J and XGLM, which do not use transformers' attention interface
    tiny.py           tiny random models of every family with in-memory tokenizers (tests, demos, benchmarks)
"""
