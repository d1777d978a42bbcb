"""Photo mode: degradation estimates, default↔photo weight interpolation, and the fidelity check."""
