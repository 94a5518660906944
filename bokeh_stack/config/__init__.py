"""The settings and every fact derived from them: the model, the layers, the run plan, the topology, the files
handed between processes. Standard library, PyYAML and pydantic only; every other room imports from here."""
