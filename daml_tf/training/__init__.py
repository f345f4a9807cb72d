"""Training a model: the schedule and epoch loop with its data, checkpoints, warm start and
finetune candidates (loop), several workers (distributed), and a local cluster of workers for
trials and benchmarks (local_cluster)."""
