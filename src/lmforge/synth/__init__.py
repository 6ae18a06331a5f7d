"""The post-training data engine; `backend.py` is its one way to ask a model for text."""
