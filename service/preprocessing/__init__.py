"""Tokenizer (``text``) and image preprocessing (``image``): the single torch-free definition of both."""
