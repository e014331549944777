"""The embedded default: the generated demo world and datasets, and demo-clip's pretraining."""
