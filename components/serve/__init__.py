"""Serving a model over the OpenAI API on the CPU (app.py): transformers' own server (`transformers serve`)
pinned to one preloaded model, with the OpenAI behaviours it lacks added around it."""
