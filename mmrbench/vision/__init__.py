"""Vision parts shared by data, baselines and adapters: image loading with one-line errors and a pixel
limit (``images``), torchvision-compatible ResNets (``backbones``), patch features (``features``),
score map -> boxes (``boxes``) and threshold rules and AUROC (``thresholds``).

Layering: this package imports only ``mmrbench.errors``, ``mmrbench.geometry`` and ``mmrbench.hashing``; ``data`` (reference
retrieval), ``baselines`` (PaDiM, PatchCore) and ``adapters`` (AnomalyGPT's map) import it, never the
other way round. Heavy modules (torch) are imported by the submodules that need them, not here.
"""
