"""Which part of proxlab may import what: the one statement of the package boundaries.

tests/test_boundaries.py reads every import statement of the code (with `ast`, importing nothing) and fails on any
that breaks these rules; docs/architecture.md explains them. Stage packages meet only through files, so a stage can run
alone, elsewhere, or in another Python environment; `core` is the ground they all stand on.
"""

STAGE_PACKAGES = ("refine", "pretrain", "evaluate")

# part -> the proxlab parts it may import (itself always allowed)
ALLOWED_PROXLAB_IMPORTS: dict[str, tuple[str, ...]] = {
    "core": (),
    "models": ("core",),
    "refine": ("core", "models"),
    "pretrain": ("core", "models"),
    "evaluate": ("core", "models"),
    "runner": ("core", "models", "refine", "pretrain", "evaluate"),
    "report": ("core", "models", "runner"),
    "cli": ("core", "models", "refine", "pretrain", "evaluate", "runner", "report"),
    "boundaries": (),
}

# core runs in both environments and under every stage: the standard library plus these, at module level ...
CORE_THIRD_PARTY = ("pyarrow", "yaml")
# ... and these only inside a function, where they are optional (the vLLM environment may lack W&B: jsonl logs still;
# without tqdm, progress is periodic lines even at a terminal).
CORE_THIRD_PARTY_LAZY = ("wandb", "tqdm")

# refine also runs in the vLLM environment, which has none of these.
FORBIDDEN_IMPORTS: dict[str, tuple[str, ...]] = {
    "refine": ("litgpt", "lightning", "lm_eval"),
    "models": ("lm_eval", "vllm"),
}
# evaluate runs in the main environment; vLLM is optional there (lm-eval's vllm model), so only inside functions.
FORBIDDEN_MODULE_LEVEL_IMPORTS: dict[str, tuple[str, ...]] = {
    "evaluate": ("vllm",),
    "models": ("litgpt", "torch", "transformers"),
}
