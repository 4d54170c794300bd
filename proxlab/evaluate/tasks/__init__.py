"""Evaluation tasks: the lm-eval task YAMLs (package data, one folder per suite: ``general/``, ``selection/``,
``math/``) and the Python they call.

``suites``          which YAMLs make up each suite, each task's reported metric, the YAML generator
``data``            the data directory and the generic ``custom_dataset`` loader of local JSONL files
``common``          row helpers both multiple-choice families share (choices + gold, HellaSwag preprocessing)
``general_docs``    general suite (paper Table 2, lighteval formats and scoring)
``selection_docs``  selection suite (paper Table 3, lm-eval formats)
``math_docs``       math suite (paper Table 5, math-evaluation-harness prompts and scoring)
``math_grader``     the math-evaluation-harness's answer extraction, normalization and equality
"""
