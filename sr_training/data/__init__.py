"""Multi-GT data (multigt), HGGT's degradation (kernels, degradation), the data pipeline that degrades the
full original, crops co-located and runs the pair queue (pipeline, queue), synthetic HGGT-layout builder."""
