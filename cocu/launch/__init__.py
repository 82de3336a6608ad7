"""Launching work: in process, the debug executor or SLURM through submitit (jobs and job arrays),
devices and DDP (docs/architecture.md).
"""
