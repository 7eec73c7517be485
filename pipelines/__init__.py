"""homegrown pipelines: the KFP DAG, the run configuration, the CLI and the local runner."""
