"""One module per pipeline step: its KFP component(s), the MLflow-tracked task around the
step's function in components/, and its `homegrown <step>` command; shared plumbing in common.

The DAG (pipelines/dag.py) lists the steps in order (`STEPS`); the CLI builds a subcommand
for each step module that has a `COMMAND`.
"""
