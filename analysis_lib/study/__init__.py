"""Training and evaluation with the literature's protocol: the settings, one run, run folders,
the experiment file, the sweep over runs and the results table."""
