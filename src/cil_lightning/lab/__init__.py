"""The leakage lab: experiments whose ground truth is known (issue 15).

- ``gaussian``: Gaussian "videos" with a closed-form denoiser for every family; the exact output
  distribution of the deterministic sampler from each start M, plain start vs Analytic-Init.
- ``textures``: moving crops of scikit-image photos with a known velocity law, and the
  phase-correlation motion measurement.
- ``model``: a small conv-net adapter (EDM or VP v-prediction) with the framework's interface.
- ``trained``: training to a stated criterion with ``DenoisingLoss`` and the evaluation metrics.

``experiments/leakage_lab/run_lab.py`` runs both labs and writes the tables and plots.
"""
