"""Statistics for honest evaluation: subject-level bootstrap, clinical posteriors, paired tests, calibration.

Pure numpy / scipy / scikit-learn; no torch. Every function that takes user input raises
:class:`alzmri.utils.errors.AlzmriError` with a one-line message on bad input.

* :mod:`.bootstrap` -- cluster (subject-level) bootstrap intervals; fold summaries.
* :mod:`.bayes` -- Beta posteriors of sensitivity/specificity, predictive values at a given
  prevalence, likelihood ratios, operating thresholds.
* :mod:`.compare` -- DeLong, McNemar, corrected resampled t-test, Bayesian correlated t-test.
* :mod:`.calibration` -- Brier score, expected calibration error, reliability curve.
"""

from __future__ import annotations

from alzmri.evaluation.stats.bayes import (
    beta_posterior,
    choose_threshold,
    likelihood_ratio_posteriors,
    likelihood_ratios,
    predictive_value_posteriors,
    predictive_values,
    sensitivity_specificity_posteriors,
)
from alzmri.evaluation.stats.bootstrap import (
    WeightedMetric,
    accuracy_metric,
    auc_metric,
    balanced_accuracy_metric,
    bootstrap_ci,
    bootstrap_many,
    kfold_summary,
    mean_metric,
)
from alzmri.evaluation.stats.calibration import brier_score, expected_calibration_error, reliability_curve
from alzmri.evaluation.stats.compare import (
    bayesian_correlated_ttest,
    corrected_resampled_ttest,
    delong_ci,
    delong_test,
    mcnemar_test,
)

__all__ = [
    "WeightedMetric",
    "accuracy_metric",
    "auc_metric",
    "balanced_accuracy_metric",
    "bayesian_correlated_ttest",
    "beta_posterior",
    "bootstrap_ci",
    "bootstrap_many",
    "brier_score",
    "choose_threshold",
    "corrected_resampled_ttest",
    "delong_ci",
    "delong_test",
    "expected_calibration_error",
    "kfold_summary",
    "likelihood_ratio_posteriors",
    "likelihood_ratios",
    "mcnemar_test",
    "mean_metric",
    "predictive_value_posteriors",
    "predictive_values",
    "reliability_curve",
    "sensitivity_specificity_posteriors",
]
