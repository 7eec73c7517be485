"""homegrown pipeline steps: each step is a plain function over URIs plus a thin KFP adapter."""
