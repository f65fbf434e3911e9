"""Training: one loop for pre-training and transfer, its set-up steps, step, resumable state and records."""
