"""Tokenizer conversions for the service's torch-free ``tokenizer.json`` files."""

from training.tokenizers.xlmr import xlmr_tokenizer, xlmr_tokenizer_json

__all__ = ["xlmr_tokenizer", "xlmr_tokenizer_json"]
