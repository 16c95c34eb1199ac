"""Multi-GT data, degradations, synthetic HGGT-layout builder."""
