"""Supervised fine-tuning (SFT) on conversations: instruction data formats, cleaning and the held-out split
(formats.py, clean.py, config.py), the chat template and loss mask, packing."""
