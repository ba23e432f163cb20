"""Datasets for training and evaluation: the Chinese-CLIP TSV/JSONL/LMDB formats and plain JSONL."""
