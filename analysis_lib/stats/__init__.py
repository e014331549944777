"""The statistics of the study, each computed in one place, and the analysis tables read from
finished runs (attention capture, decomposition, distance, entropy, relevance, causal tests)."""
