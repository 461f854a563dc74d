"""Evaluation: the ELBO, the IWAE bound, probes and sample quality of a trained model."""
