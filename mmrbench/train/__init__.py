"""Anomaly-R1 reference trainer: SFT cold start and GRPO on Qwen2.5-VL (any image-text-to-text
model with a chat template) with LoRA.

The loop is our own, on transformers + peft, rather than TRL's GRPOTrainer: contrastive sampling
(a verified positive in every group, opposite-hint negatives when a group is all positive) needs to
edit groups after generation, and every piece of the objective is kept pure and hand-testable in
:mod:`mmrbench.train.grpo_math` and :mod:`mmrbench.train.rewards`. Heavy imports (torch,
transformers, peft) happen in the modules that need them, never here.
"""
