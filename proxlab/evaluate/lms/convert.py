"""LitGPT checkpoint -> Hugging Face model directory (``proxlab export``, HF-side evaluation, parity checks).

The conversion itself lives in ``proxlab.models.hf_export`` (one implementation: the refine package's
``refiner.select`` converts its epoch checkpoints with it too, and refine may not import ``evaluate``); this module
keeps the names evaluate and the command line import.
"""

from __future__ import annotations

from proxlab.models.hf_export import hf_config_from_litgpt, hf_state_dict, litgpt_to_hf, llama_config_from_litgpt

__all__ = ["hf_state_dict", "litgpt_to_hf", "llama_config_from_litgpt", "hf_config_from_litgpt"]
