"""lm-eval models: ``litgpt`` (LitGPT checkpoints, read directly), ``hf`` (Hugging Face models, shared-context
scoring) and ``convert`` (a LitGPT checkpoint written as an HF model, for parity checks). Importing a module here
registers its lm-eval model name; this package itself imports nothing heavy."""
