"""The metric-selection study: phases, complementarity, ensemble, selection."""
