"""Planning and running experiments: compose and validate the config, plan the stage graph, launch stages, ledger, Slurm submission."""
