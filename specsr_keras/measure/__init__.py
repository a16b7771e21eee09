"""Line measurement: Hα, [NII] fluxes, N2, redshift and their uncertainties, batched."""

from specsr_keras.measure.baselines import (
    POPULATION_N2,
    ceiling_fit,
    deblend_halpha_with_prior,
    direct_lowres_fit,
    faisst_catalogue_prior,
    faisst_prior_n2,
    fit_times_prior,
)
from specsr_keras.measure.linefit import N2_PRIOR_RANGE, fit_halpha_nii, fit_target_grid
from specsr_keras.measure.redshift import centroid_redshift_ignoring_nii, coarse_redshift

__all__ = [
    "N2_PRIOR_RANGE",
    "POPULATION_N2",
    "faisst_catalogue_prior",
    "fit_times_prior",
    "ceiling_fit",
    "centroid_redshift_ignoring_nii",
    "coarse_redshift",
    "deblend_halpha_with_prior",
    "direct_lowres_fit",
    "faisst_prior_n2",
    "fit_halpha_nii",
    "fit_target_grid",
]
