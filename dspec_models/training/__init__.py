"""Training infrastructure shared by supervised training (``dspec train``) and distillation.

Modules: :mod:`.schedule` (Adafactor + Table C.1 schedule), :mod:`.data`
(tokenized splits, batches indexed by step), :mod:`.checkpoint` (orbax),
:mod:`.parallel` (``jax.sharding`` data parallelism), :mod:`.step` (jitted
update), :mod:`.loop` (progress bar, logging, evaluation, checkpoints),
:mod:`.evaluation` (held-out loss, task metrics), :mod:`.plots`,
:mod:`.rundir` (config, metrics, :func:`load_model`), :mod:`.sft`.

Run directory layout (``dspec train --out RUN`` / ``dspec distill --out RUN``)::

    RUN/
      config.json        kind ("sft" | "distill"), task, model_name, model (every
                         ModelConfig field, vocab_size = the task vocabulary), vocab
                         {task, vocab_size, path, sha256}, max_input_len,
                         max_target_len, train (all options), schedule; distill runs
                         add recipe, teacher/student run dirs and the teacher config
      checkpoints/<step>/  orbax CheckpointManager: items params, opt_state, meta
                         (meta: step, data_position, rng_key, batch_size)
      metrics.jsonl      one JSON object per line; "event": "train" (step, loss,
                         tokens_per_s, learning_rate, grad_norm, ...) or "eval"
                         (held-out loss, task score; distill: SD alpha/tau per
                         gamma and temperature, eps, Theorem 4.1 bound, ...)
      plots/             loss.png, eval.png (+ acceptance.png, tau.png for distill)
      summary.json       final step and first/last evaluation records

Loading a trained model (what the SD measurement code uses)::

    from dspec_models.training import load_model
    config, params, extra = load_model("runs/target")   # extra["task"], extra["vocab"], ...

A run directory is resumable: re-running the same command continues from the
latest checkpoint and reproduces the uninterrupted run bit for bit.
"""

from dspec_models.training.rundir import load_model, read_config, read_metrics

__all__ = ["load_model", "read_config", "read_metrics"]
