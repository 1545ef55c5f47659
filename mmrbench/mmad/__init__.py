"""MMAD (Jiang et al., ICLR 2025; github.com/jam-cc/MMAD) in the mmrbench harness: protocol ``mmad-v1``.

``data`` reads the release, ``prompts`` holds MMAD's prompt as data, ``answers`` turns model text into
letters, ``scoring`` computes MMAD's tables (modes ``strict`` and ``mmad-compatible``), ``task`` is what a
runner drives, ``run`` is a minimal driver on the existing adapters, ``reported`` holds MMAD's published
per-model tables, ``synth`` writes an MMAD-format miniature of the bundled synthetic benchmark.
"""
