"""The model: open_clip CLIP loaded once, the variants as data, and the one block where prompts
and biases enter, with every attention map observable and decomposed."""
