"""The post-training data engine behind `lmforge data …`; `backend.py` is its one way to ask a
model for text, `stage.py` what every command shares (prompt sets, the resumable writer, the
manifest), `score.py` the verifier / reward-model / judge scorers, and one module per
command: distill, feedback (judge), best_of_n, select, idk, augment, textbook."""
