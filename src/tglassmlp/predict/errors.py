"""The one error of prediction: input that predict.py cannot use."""

class PredictionInputError(ValueError):
    """An ensemble, structure or request predict.py cannot use (the message names the file / run / value)."""
