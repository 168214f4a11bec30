"""Fine-tuning: video data, the train step, checkpoints (see train.py and configs/train/)."""
