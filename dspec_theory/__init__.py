"""dspec_theory: the exact-probability layer of distillspec.

Modules:
  divergences  FKL, RKL, JSD[beta], TVD from probabilities or logits (App. B.1)
  lenience     f_lin, f_sq, f_exp for lossy SD (section 4)
  acceptance   token acceptance beta = 1 - TVD, lossy acceptance, residual
  block        tau(alpha, gamma), speedup tau / (c gamma + 1), best gamma
  markov       exact alpha, L_p, eps, Theorem 4.1 bound, exact finite-gamma SD
  enumeration  brute-force exact distributions for tiny AR models (the check)
  sampler      Algorithm A.1 in JAX and a vectorised Markov SD simulator
  chi_square   Pearson chi-square with pooling, power, Holm (the statistical tests)
"""

from dspec_theory.acceptance import (
    lossy_token_acceptance,
    residual_distribution,
    speculative_token_distribution,
    token_acceptance,
)
from dspec_theory.block import (
    alpha_from_tau,
    best_gamma,
    block_efficiency,
    expected_speedup,
    speedup_from_tau,
)
from dspec_theory.divergences import (
    divergence_from_logits,
    divergence_from_probs,
    forward_kl,
    forward_kl_from_logits,
    jsd,
    jsd_from_logits,
    parse_divergence,
    reverse_kl,
    reverse_kl_from_logits,
    tvd,
    tvd_from_logits,
)
from dspec_theory.lenience import Lenience, apply_lenience, f_exp, f_lin, f_sq, parse_lenience
from dspec_theory.markov import (
    MarkovLM,
    markov_lm,
    perturbed_markov_lm,
    random_markov_lm,
    sd_stats,
    sequence_stats,
)
from dspec_theory.sampler import (
    probs_from_logits,
    simulate_finite_state,
    simulate_markov,
    speculative_step,
)

__all__ = sorted(name for name in globals() if not name.startswith("_"))
