"""Distill: supervised fine-tuning of the PI0 VLA on curated episodes (`pld-robot distill`), written as a
checkpoint the policy server loads as is. config (DistillConfig), select (episode selection), stats
(normalisation statistics), data (batches), loss (masked flow matching), lora (peft), trainer (the run),
metrics (CSV, plot, progress), cli."""
