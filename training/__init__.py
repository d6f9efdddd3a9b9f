"""Training: what builds and fits a run from a checked Config (``training.run``): the data module and network from
``datasets`` and ``models``, the Trainer with its checkpoints, early stopping and weight averaging, the records kept
up to date during training, and the Lightning loggers (MLflow, TensorBoard, Neptune)."""
