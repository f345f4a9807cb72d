"""Running a trained model on frames: the streaming detector, its runtimes and the exports."""
