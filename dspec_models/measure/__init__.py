"""Speculative decoding measured against the theory (``dspec sd``; issue 5, paper section 3,
5.1, Appendix C.4).

For a trained target/draft pair and every block size ``gamma`` and temperature
``T`` (batch size 1, N held-out examples): every acceptance statistic of the
measurement core :mod:`.acceptance` (per-token acceptance, tau as ratio of
totals and mean of ratios with standard errors, the i.i.d. formula
``tau(alpha) = (1 - alpha^(gamma+1)) / (1 - alpha)`` of the measured
acceptance, engine-standard acceptance length, draft acceptance rate and
per-position rates), the measured relative latency ``c = t_draft_step /
t_target_step``, the realized wall-clock speedup over autoregressive target
decoding, and the predicted speedups ``tau / (c gamma + 1)`` (paper) and
``tau t_step / (gamma t_draft + t_verify)`` (measured verification cost).

Modules: :mod:`.acceptance` (the measurement core), :mod:`.options` (settings), :mod:`.pairs` (run directories),
:mod:`.examples` (held-out inputs), :mod:`.timing` (wall clock, forward-pass
costs), :mod:`.stats` (spreads, predictions), :mod:`.cell` (one
``(T, gamma)`` cell), :mod:`.report` (JSON schema, resume, table),
:mod:`.plots` (PNG), :mod:`.run` (:func:`measure_sd`, :func:`measure_runs`).
"""

from dspec_models.measure.acceptance import cell_key
from dspec_models.measure.options import MeasureOptions
from dspec_models.measure.report import REPORT_FILE, SCHEMA, SCHEMA_VERSION, format_report
from dspec_models.measure.run import measure_runs, measure_sd

__all__ = ["MeasureOptions", "cell_key", "REPORT_FILE", "SCHEMA", "SCHEMA_VERSION",
           "format_report", "measure_runs", "measure_sd"]
