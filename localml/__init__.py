"""The offline stack behind backends/local.py: a tiny real Phi-3 fine-tune on CPU, MLflow
tracking/registry, local scoring servers behind an endpoint front, a local Prompt flow
connection. Heavy imports (torch, transformers, peft, mlflow, promptflow) stay inside functions
or in modules only the offline runtime imports."""
