"""Building refining models (paper §2.3, §A): a teacher annotates seed documents (`annotate`), the annotations become
SFT examples in the refine stage's own prompt format (`sft_data`); fine-tuning is `proxlab.pretrain.finetune`.
The choices the paper leaves open are in docs/refiners.md."""
