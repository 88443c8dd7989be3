"""PI0 (transformers' PI0ForConditionalGeneration) as a base policy: preprocessing shared with the SFT
trainer (preprocess), checkpoint folders in Hugging Face or LeRobot layout (checkpoint), the Policy
backend the server runs (backend) and tiny random checkpoints for tests and the sim (tiny)."""
