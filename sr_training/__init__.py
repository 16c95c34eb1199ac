"""Perceptual SR training with IQA-driven ground-truth sampling (HGGT recipe)."""
