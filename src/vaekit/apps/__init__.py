"""Applications of a trained model: encode, anomaly, denoise, explore, compare, report,
and the scikit-learn estimator."""
