"""One training run: samplers, evaluation, records and the resumable trainer."""
