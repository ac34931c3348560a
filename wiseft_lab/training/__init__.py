"""Training: fine-tuning methods (a registry), the shared optimisation loop, lr schedules."""
