"""What a compute node runs: plain functions plus `python -m jobs.<kind>` entries; no Hydra, no submitit."""
