"""Scoring a trained model: test videos and their AUCs (scoring), the alarm threshold
(calibration), the label-free speed-up check (speedup_check), and the files and plots of an
evaluation (report)."""
