"""Reports: Markdown + PNG (+ CSV of each figure's data), with provenance."""
