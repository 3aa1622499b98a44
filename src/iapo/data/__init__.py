"""Data: the VQASample record, synthetic visual search, JSONL training data, the six test sets and scoring."""
