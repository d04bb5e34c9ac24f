"""Data: image loading, transforms and the built-in MedSynth dataset."""
