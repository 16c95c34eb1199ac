"""FT stage (method.md 4): LoRA adapters on a frozen base generator, loss L - lambda_Q * Q(SR)."""
