"""Evaluation and accounting of trained models."""
