"""PLD (Probe, Learn, Distill) in miniature, in the fast sim: `pld-robot pld-sim`.

A small PI0 learns the pick-up task by SFT on scripted demonstrations (the generalist), residual SAC
probes it, hybrid rollouts collect successful episodes, and distillation on them makes the new
generalist; a second student distilled on as many successful base-only rollouts is the paper's
comparison. docs/distill.md, "The PLD loop in the fast sim".
"""
