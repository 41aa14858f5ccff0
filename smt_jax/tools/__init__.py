"""Command-line tools beside training: export, model summary and benchmarks.

    python -m smt_jax.tools.export    inference checkpoint or TensorFlow SavedModel
    python -m smt_jax.tools.summary   per-stage table, parameters, MACs, FLOPs
    python -m smt_jax.tools.bench     model step images/s (inference or training)
    python -m smt_jax.tools.bench_input   input pipeline images/s
    python -m smt_jax.tools.build_ade20k  ADE20K TFDS dataset (ArrayRecord) from the official zip
"""
