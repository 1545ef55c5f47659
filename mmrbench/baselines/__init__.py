"""Classical full-shot anomaly detectors (PaDiM, PatchCore) and the map -> box pipeline.

Heavy modules (torch) are imported by the submodules that need them, not here, so importing
``mmrbench.vision.boxes`` stays cheap for the AnomalyGPT bridge.
"""
