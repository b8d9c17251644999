"""Python-backend model code, shared by the variants in model_repository/. Each variant's
`model.py` only names which engine it runs; the input/output contract lives here once."""
